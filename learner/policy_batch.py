"""Turning rollout samples into learner tensors, and the learner's log-probs of completion tokens.

The learner re-processes each prompt with its own Hugging Face processor (which expands the image
placeholder into exactly as many image tokens as the image has merged patches) and appends the
completion token ids vLLM sampled. Token counts and image features therefore always agree, and
the image-token count equals vLLM's when both see the same `PolicySettings` (the processor built
with its pixel bounds, the image resized to them).

Tensors are built on the CPU; the learner moves them to its engine's device (`learner.devices`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrainSample:
    """One completion to learn from."""

    prompt: str
    """Chat-formatted prompt text with one unexpanded image placeholder."""
    image: str
    completion_ids: list[int]
    rollout_logprobs: list[float]
    """Per-token log-probs from the sampling engine."""
    advantage: float
    weight: float = 1.0
    """0 for padding samples (they keep every rank's micro-batch count equal; no gradient)."""


def encode_batch(processor, samples: list[TrainSample], settings=None) -> dict[str, Any]:
    """Right-padded input_ids, a completion mask, image tensors and per-token rollout log-probs
    (CPU tensors). `settings` (`PolicySettings`) resizes the images as every other stage does;
    None loads them unresized (the processor's own bounds apply)."""
    import torch

    from skinr1.models.settings import PolicySettings

    settings = settings or PolicySettings()
    rows, completion_starts, type_rows = [], [], []
    pixel_values, grids = [], []
    for sample in samples:
        image = settings.load_image(sample.image)
        prompt = processor(text=[sample.prompt], images=[image], return_tensors="pt")
        prompt_ids = prompt["input_ids"][0].tolist()
        completion_starts.append(len(prompt_ids))
        rows.append(prompt_ids + list(sample.completion_ids))
        # Image-token markers: Qwen2.5-VL computes its 3-D (mRoPE) positions from them, as vLLM does.
        type_rows.append(prompt["mm_token_type_ids"][0].tolist() + [0] * len(sample.completion_ids))
        pixel_values.append(prompt["pixel_values"])
        grids.append(prompt["image_grid_thw"])
    width = max(len(r) for r in rows)
    pad = processor.tokenizer.pad_token_id
    batch = len(rows)
    input_ids = torch.full((batch, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    token_types = torch.zeros((batch, width), dtype=torch.long)
    # Targets are shifted by one: position t predicts token t + 1.
    completion_mask = torch.zeros((batch, width - 1), dtype=torch.float32)
    rollout_logprobs = torch.zeros((batch, width - 1), dtype=torch.float32)
    for i, (row, start, sample) in enumerate(zip(rows, completion_starts, samples)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        token_types[i, : len(row)] = torch.tensor(type_rows[i])
        n = len(sample.completion_ids)
        completion_mask[i, start - 1 : start - 1 + n] = sample.weight
        rollout_logprobs[i, start - 1 : start - 1 + n] = torch.tensor(sample.rollout_logprobs, dtype=torch.float32)
    return {
        "model_inputs": {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": token_types,
            "pixel_values": torch.cat(pixel_values),
            "image_grid_thw": torch.cat(grids),
        },
        "targets": input_ids[:, 1:],
        "mask": completion_mask,
        "rollout_logprobs": rollout_logprobs,
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
    }


def token_logprobs(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every next token under `model` ([batch, tokens - 1])."""
    return token_logprobs_and_entropy(model, encoded, temperature)[0]


def token_logprobs_and_entropy(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every next token under `model` and the detached entropy of each position
    (both [batch, tokens - 1]), from one forward pass."""
    from learner.grpo import logprobs_and_entropy

    logits = model(**encoded["model_inputs"]).logits[:, :-1]
    return logprobs_and_entropy(logits, encoded["targets"], temperature)
