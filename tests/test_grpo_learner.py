"""The GRPO update moves the policy the right way: one learner rank (DeepSpeed + LoRA), real model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from learner.grpo_config import GRPOConfig, LearnerConfig, LossConfig
from learner.policy_batch import TrainSample, encode_batch, token_logprobs
from rollout.sampling import SamplingSettings

pytestmark = pytest.mark.timeout(600)


def test_update_raises_rewarded_completion_and_lowers_penalised_one(tiny_model_dir, tmp_path):
    from learner.group import free_port
    from learner.rank import LearnerRank

    image = tmp_path / "lesion.png"
    Image.new("RGB", (64, 64), (25, 25, 80)).save(image)
    config = GRPOConfig(
        steps=10, prompts_per_step=1, mode="open",
        sampling=SamplingSettings(group_size=2, temperature=1.0, max_tokens=32),
        loss=LossConfig(kl_beta=0.0, tis_cap=0.0),
        learner=LearnerConfig(num_ranks=1, micro_batch_size=2, learning_rate=1e-2),
    )
    rank = LearnerRank(0, 1, str(tiny_model_dir), config, seed=0)
    rank.setup("127.0.0.1", free_port())
    try:
        tokenizer = rank.processor.tokenizer
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the diagnosis?"}]}],
            add_generation_prompt=True, tokenize=False,
        )
        good = tokenizer.encode("<final diagnosis>melanoma (malignant)</final diagnosis>")
        bad = tokenizer.encode("<final diagnosis>psoriasis (non-neoplastic)</final diagnosis>")

        def sequence_logprobs() -> list[float]:
            samples = [TrainSample(prompt, str(image), ids, [0.0] * len(ids), 0.0) for ids in (good, bad)]
            encoded = encode_batch(rank.processor, samples)
            with torch.no_grad():
                values = token_logprobs(rank.engine, encoded, temperature=1.0)
            return (values * (encoded["mask"] > 0)).sum(dim=1).tolist()

        before = sequence_logprobs()
        samples = [TrainSample(prompt, str(image), good, [0.0] * len(good), 1.0),
                   TrainSample(prompt, str(image), bad, [0.0] * len(bad), -1.0)]
        for _ in range(3):
            report = rank.train_step(samples, step_tokens=len(good) + len(bad))
        after = sequence_logprobs()
    finally:
        rank.shutdown()
    assert after[0] > before[0] + 1.0, (before, after)  # the rewarded answer became more likely
    assert after[1] < before[1] - 1.0, (before, after)  # the penalised one less likely
    assert report["lr"] > 0 and report["clipped"] >= 0
