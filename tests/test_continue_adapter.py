"""GRPO that continues SFT's LoRA adapter (the paper's code) instead of a fresh one on merged weights.

One in-process learner rank (DeepSpeed on gloo, PEFT, the tiny model): the continued policy starts
exactly at the SFT policy (= the merged reference), the adapter trains, and a rank that disagrees
with the adapter's is refused.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from learner.grpo_config import GRPOConfig, LearnerConfig, LossConfig
from learner.lora import LoraSettings
from learner.policy_batch import TrainSample, encode_batch, token_logprobs
from learner.policy_start import PolicyStart
from rollout.sampling import SamplingSettings

pytestmark = pytest.mark.timeout(600)

RANK, ALPHA = 8, 16


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with non-zero weights (as SFT leaves it) and its merge into the base."""
    from learner.export import merge_adapter
    from learner.lora import apply_lora
    from skinr1.models.loading import load_policy, load_processor

    directory = tmp_path_factory.mktemp("sft-adapter")
    model = apply_lora(load_policy(tiny_model_dir), LoraSettings(rank=RANK, alpha=ALPHA, dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # PEFT initialises B to zero: the adapter would change nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(directory / "adapter", safe_serialization=True)
    load_processor(tiny_model_dir).save_pretrained(directory / "adapter")
    merged = merge_adapter(directory / "adapter", directory / "merged", base=str(tiny_model_dir))
    return directory / "adapter", merged


def _config(rank: int = RANK, alpha: int = ALPHA) -> GRPOConfig:
    return GRPOConfig(
        steps=10, prompts_per_step=1, mode="open", continue_sft_adapter=True,
        sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
        loss=LossConfig(kl_beta=0.04, tis_cap=0.0),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=1e-3,
                              lora=LoraSettings(rank=rank, alpha=alpha, dropout=0.1)),
    )


def _samples(rank, image: str) -> list[TrainSample]:
    tokenizer = rank.processor.tokenizer
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the diagnosis?"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    good = tokenizer.encode("<final diagnosis>melanoma (malignant)</final diagnosis>")
    bad = tokenizer.encode("<final diagnosis>psoriasis (non-neoplastic)</final diagnosis>")
    return [TrainSample(prompt, image, good, [0.0] * len(good), 1.0), TrainSample(prompt, image, bad, [0.0] * len(bad), -1.0)]


def _sequence_logprobs(model, processor, samples) -> torch.Tensor:
    encoded = encode_batch(processor, samples)
    with torch.no_grad():
        values = token_logprobs(model, encoded, temperature=1.0)
    return (values * (encoded["mask"] > 0)).sum(dim=1)


@pytest.mark.slow
def test_continued_adapter_starts_at_the_sft_policy_and_trains(tiny_model_dir, sft_adapter, tmp_path):
    from learner.group import free_port
    from learner.rank import LearnerRank
    from skinr1.models.loading import load_policy

    adapter, merged = sft_adapter
    image = tmp_path / "lesion.png"
    Image.new("RGB", (64, 64), (25, 25, 80)).save(image)
    start = PolicyStart(base=str(tiny_model_dir), adapter=str(adapter), reference=str(merged))
    rank = LearnerRank(0, 1, start, _config(), seed=0)
    rank.setup(("127.0.0.1", free_port()))
    try:
        samples = _samples(rank, str(image))
        rank.engine.module.eval()
        policy = _sequence_logprobs(rank.engine, rank.processor, samples)
        reference = _sequence_logprobs(rank.reference, rank.processor, samples)
        bare = _sequence_logprobs(load_policy(tiny_model_dir), rank.processor, samples)
        # The policy is base + SFT adapter, the reference the merged SFT weights: the same function.
        assert torch.allclose(policy, reference, atol=1e-3), (policy, reference)
        assert (policy - bare).abs().max() > 0.05, "the SFT adapter must change the policy for this test to mean anything"
        trainable = {n for n, p in rank.engine.module.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        dropouts = [m.p for n, m in rank.engine.module.named_modules() if n.endswith("lora_dropout.default")]
        assert dropouts and set(dropouts) == {0.1}  # the RL setting, not the adapter's 0.0

        for _ in range(3):
            rank.train_step(samples, step_size=sum(len(s.completion_ids) for s in samples))
        rank.engine.module.eval()
        after = _sequence_logprobs(rank.engine, rank.processor, samples)
    finally:
        rank.shutdown()
    assert after[0] > policy[0] + 0.5, (policy, after)  # the rewarded answer rose from the SFT policy


def test_an_adapter_of_another_rank_is_refused(tiny_model_dir, sft_adapter):
    from learner.lora import continue_lora
    from skinr1.models.loading import load_policy

    adapter, _ = sft_adapter
    with pytest.raises(ValueError, match=r"rank 8 and alpha 16.*rank 64 and alpha 16"):
        continue_lora(load_policy(tiny_model_dir), adapter, LoraSettings(rank=64, alpha=16))


def test_continue_needs_lora_and_a_reference():
    with pytest.raises(ValueError, match="continue_sft_adapter needs rl.learner.lora.enabled"):
        GRPOConfig(continue_sft_adapter=True, learner=LearnerConfig(lora=LoraSettings(enabled=False)))
    with pytest.raises(ValueError, match="KL reference"):
        PolicyStart(base="base", adapter="adapter")


def test_engines_start_on_weights_that_generate_as_the_start_policy():
    continued = PolicyStart(base="base", adapter="sft-adapter", reference="merged-sft")
    assert continued.engine_model(serves_adapters=True) == "base"  # the adapter is pushed before the first step
    assert continued.engine_model(serves_adapters=False) == "merged-sft"
    assert PolicyStart.of("merged-sft").engine_model(serves_adapters=False) == "merged-sft"
