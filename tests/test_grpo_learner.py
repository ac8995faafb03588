"""The GRPO update moves the policy the right way: one learner rank (DeepSpeed + LoRA), real model."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from learner.grpo_config import GRPOConfig, LearnerConfig, LossConfig
from learner.policy_batch import TrainSample, encode_batch, token_logprobs, vision_language_model
from rollout.sampling import SamplingSettings

pytestmark = pytest.mark.timeout(600)


@dataclass
class Scene:
    """A started learner rank and one image with a rewarded and a penalised answer."""

    rank: object
    prompt: str
    image: str
    good: list[int]
    bad: list[int]

    def samples(self, good_advantage: float = 1.0, bad_advantage: float = -1.0) -> list[TrainSample]:
        return [TrainSample(self.prompt, self.image, ids, [0.0] * len(ids), advantage)
                for ids, advantage in ((self.good, good_advantage), (self.bad, bad_advantage))]


@contextmanager
def learner_scene(model_dir, tmp_path, config: GRPOConfig):
    from learner.group import free_port
    from learner.rank import LearnerRank

    image = tmp_path / "lesion.png"
    Image.new("RGB", (64, 64), (25, 25, 80)).save(image)
    rank = LearnerRank(0, 1, str(model_dir), config, seed=0)
    rank.setup(("127.0.0.1", free_port()))
    try:
        tokenizer = rank.processor.tokenizer
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the diagnosis?"}]}],
            add_generation_prompt=True, tokenize=False,
        )
        yield Scene(rank, prompt, str(image), tokenizer.encode("<final diagnosis>melanoma (malignant)</final diagnosis>"),
                    tokenizer.encode("<final diagnosis>psoriasis (non-neoplastic)</final diagnosis>"))
    finally:
        rank.shutdown()


def test_update_raises_rewarded_completion_and_lowers_penalised_one(tiny_model_dir, tmp_path):
    config = GRPOConfig(
        steps=10, prompts_per_step=1, mode="open",
        sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
        loss=LossConfig(kl_beta=0.0, tis_cap=0.0),
        # 1e-3: three steady steps. At 1e-2 Adam overshoots the rank-64 adapter after the first
        # step and the log-probs swing by tens of nats either way.
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=1e-3),
    )
    with learner_scene(tiny_model_dir, tmp_path, config) as scene:
        rank = scene.rank

        def sequence_logprobs() -> list[float]:
            encoded = encode_batch(rank.processor, scene.samples(0.0, 0.0))
            with torch.no_grad():
                values = token_logprobs(rank.engine, encoded, temperature=1.0)
            return (values * (encoded["mask"] > 0)).sum(dim=1).tolist()

        before = sequence_logprobs()
        forwards = []
        # One pass over a micro-batch runs the vision tower once (and the language model twice:
        # the shared prompts, then the completions on top).
        hook = vision_language_model(rank.engine).visual.register_forward_hook(lambda *_: forwards.append(1))
        step_size = len(scene.good) + len(scene.bad)
        reports = [rank.train_step(scene.samples(), step_size=step_size) for _ in range(3)]
        hook.remove()
        after = sequence_logprobs()
    assert after[0] > before[0] + 1.0, (before, after)  # the rewarded answer became more likely
    assert after[1] < before[1] - 1.0, (before, after)  # the penalised one less likely
    # One update per step: the training forward's own log-probs are the old ones, so each step
    # runs one forward per micro-batch (no scoring pass) and the ratio is exactly 1 (no clipping).
    assert len(forwards) == 3, len(forwards)
    assert all(r["lr"] > 0 and r["clipped"] == 0.0 and r["entropy"] > 0 for r in reports), reports


def test_several_updates_per_step_score_old_logprobs_and_clip(tiny_model_dir, tmp_path):
    config = GRPOConfig(
        steps=10, prompts_per_step=2, mode="open",
        sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
        loss=LossConfig(kl_beta=0.0, tis_cap=0.0, clip_low=0.05, clip_high=0.05),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=5e-2, updates_per_step=2),
    )
    with learner_scene(tiny_model_dir, tmp_path, config) as scene:
        forwards = []
        hook = vision_language_model(scene.rank.engine).visual.register_forward_hook(lambda *_: forwards.append(1))
        report = scene.rank.train_step(scene.samples() * 2, step_size=2 * (len(scene.good) + len(scene.bad)))
        hook.remove()
    # Two micro-batches: scored once before the updates, then trained once each.
    assert len(forwards) == 4, len(forwards)
    # The second update sees weights the first one moved (lr 5e-2): its ratio leaves [0.95, 1.05].
    assert report["clipped"] > 0, report


@pytest.mark.parametrize("offload", [False, True])
def test_full_fine_tuning_reference_scores_where_it_was_put(tiny_model_dir, tmp_path, offload):
    """The frozen reference sits on the engine's device (or in host memory when offloaded) and its
    log-probs come back to the engine's device for the KL term."""
    import math

    from learner.devices import module_device
    from learner.lora import LoraSettings

    config = GRPOConfig(
        steps=10, prompts_per_step=1, mode="open", sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
        loss=LossConfig(kl_beta=0.04, tis_cap=0.0),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=1e-3, offload_reference=offload,
                              lora=LoraSettings(enabled=False)),
    )
    with learner_scene(tiny_model_dir, tmp_path, config) as scene:
        expected = "cpu" if offload else scene.rank.engine.device.type
        assert module_device(scene.rank.reference).type == expected
        step_size = len(scene.good) + len(scene.bad)
        reports = [scene.rank.train_step(scene.samples(), step_size=step_size) for _ in range(2)]
    assert all(math.isfinite(r["kl"]) for r in reports) and reports[1]["kl"] > 0, reports


def test_merged_scoring_passes_give_the_same_steps_with_fewer_forwards(tiny_model_dir, tmp_path):
    """rl.learner.score_micro_batch_size merges a step's micro-batches into one no-grad pass for the
    old and the reference log-probs: fewer vision-tower passes, the same losses, KL and clipping."""
    reports, forwards = {}, {}
    for score in (None, 4):
        config = GRPOConfig(
            steps=10, prompts_per_step=2, mode="open",
            sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
            loss=LossConfig(kl_beta=0.04, tis_cap=0.0, clip_low=0.05, clip_high=0.05),
            learner=LearnerConfig(num_ranks=1, micro_batch_size=2, score_micro_batch_size=score, learning_rate=5e-2,
                                  updates_per_step=2),
        )
        with learner_scene(tiny_model_dir, tmp_path, config) as scene:
            calls = []
            hook = vision_language_model(scene.rank.engine).visual.register_forward_hook(lambda *_: calls.append(1))
            step_size = 2 * (len(scene.good) + len(scene.bad))
            reports[score] = [scene.rank.train_step(scene.samples() * 2, step_size=step_size) for _ in range(2)]
            hook.remove()
        forwards[score] = len(calls)
    # Per step: old and reference log-probs of 2 micro-batches, then 2 trained ones.
    assert forwards == {None: 2 * (2 + 2 + 2), 4: 2 * (1 + 1 + 2)}, forwards
    assert reports[None][1]["kl"] > 0 and reports[None][1]["clipped"] > 0, reports[None]
    for alone, merged in zip(reports[None], reports[4]):
        for name in ("loss", "policy", "kl", "clipped", "entropy"):
            assert merged[name] == pytest.approx(alone[name], rel=1e-4, abs=1e-6), (name, alone, merged)
