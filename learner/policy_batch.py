"""Turning rollout samples into learner tensors, and the learner's log-probs of completion tokens.

The learner re-processes each prompt with its own Hugging Face processor (which expands the image
placeholder into exactly as many image tokens as the image has merged patches) and appends the
completion token ids vLLM sampled. Token counts and image features therefore always agree, and
the image-token count equals vLLM's when both see the same `PolicySettings` (the processor built
with its pixel bounds, the image resized to them).

A group's G completions share one prompt and one image: the processor runs once per (prompt,
image) of a step (`PromptCache`), and the vision tower once per distinct image of a micro-batch
(its features are reused for every row showing it). Logits and log-softmax are computed only from
the first completion position on, never over the prompt and image tokens before it.

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
    image: str | bytes
    """The image's path, or its file's bytes (`rollout.sampling.RolloutRequest.image`)."""
    completion_ids: list[int]
    rollout_logprobs: list[float]
    """Per-token log-probs from the sampling engine."""
    advantage: float
    weight: float = 1.0
    """0 for padding samples (they keep every rank's micro-batch count equal; no gradient)."""


@dataclass(frozen=True)
class EncodedPrompt:
    """The processor's output for one (prompt, image): what every completion of a group shares."""

    ids: list[int]
    token_types: list[int]
    """1 on image tokens (Qwen2.5-VL computes its 3-D mRoPE positions from them, as vLLM does)."""
    pixel_values: Any
    image_grid_thw: Any


PromptCache = dict
"""(prompt, image) -> `EncodedPrompt`; one per step, shared by its micro-batches."""


def encode_prompt(processor, prompt: str, image: str | bytes, settings=None) -> EncodedPrompt:
    """`settings` (`PolicySettings`) resizes the image; None loads it unresized."""
    from skinr1.models.settings import PolicySettings

    settings = settings or PolicySettings()
    encoded = processor(text=[prompt], images=[settings.load_image(image)], return_tensors="pt")
    return EncodedPrompt(encoded["input_ids"][0].tolist(), encoded["mm_token_type_ids"][0].tolist(),
                         encoded["pixel_values"], encoded["image_grid_thw"])


def cached_prompt(processor, sample: TrainSample, settings, prompts: PromptCache) -> EncodedPrompt:
    """`sample`'s processed prompt, processed on its first request only."""
    key = (sample.prompt, sample.image)
    if key not in prompts:
        prompts[key] = encode_prompt(processor, sample.prompt, sample.image, settings)
    return prompts[key]


def encode_batch(processor, samples: list[TrainSample], settings=None, prompts: PromptCache | None = None) -> dict[str, Any]:
    """Right-padded input_ids, a completion mask, image tensors and per-token rollout log-probs
    (CPU tensors). `settings` (`PolicySettings`) resizes the images as every other stage does;
    None loads them unresized (the processor's own bounds apply). `prompts` keeps processed
    prompts across calls (pass one dict for all micro-batches of a step); without it each distinct
    (prompt, image) of this batch is processed once.

    The pixels of each distinct image are held once, in `images` (with, per row, which image it
    is): a group's G rows share one image, and a copy per row would be G times the bytes moved to
    the device. `model_inputs` holds everything else (`image_grid_thw` per row: the rotary
    positions need it); `per_row_inputs` builds the inputs of a plain `model(**inputs)`.
    `first_target` is the first position whose next-token log-prob a completion needs."""
    import torch

    from skinr1.models.settings import PolicySettings

    settings = settings or PolicySettings()
    prompts = {} if prompts is None else prompts
    rows, completion_starts, type_rows, encoded_prompts = [], [], [], []
    for sample in samples:
        prompt = cached_prompt(processor, sample, settings, prompts)
        encoded_prompts.append(prompt)
        completion_starts.append(len(prompt.ids))
        rows.append(prompt.ids + list(sample.completion_ids))
        type_rows.append(prompt.token_types + [0] * len(sample.completion_ids))
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
    distinct: dict[int, int] = {}  # id(EncodedPrompt) -> index among this batch's distinct images
    image_rows, unique = [], []
    for prompt in encoded_prompts:
        if id(prompt) not in distinct:
            distinct[id(prompt)] = len(unique)
            unique.append(prompt)
        image_rows.append(distinct[id(prompt)])
    return {
        "model_inputs": {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": token_types,
            "image_grid_thw": torch.cat([p.image_grid_thw for p in encoded_prompts]),
        },
        "images": {
            "pixel_values": torch.cat([p.pixel_values for p in unique]),
            "image_grid_thw": torch.cat([p.image_grid_thw for p in unique]),
            "rows": torch.tensor(image_rows, dtype=torch.long),
        },
        "first_target": min(completion_starts) - 1,
        "targets": input_ids[:, 1:],
        "mask": completion_mask,
        "rollout_logprobs": rollout_logprobs,
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
    }


def per_row_inputs(encoded: dict[str, Any]) -> dict[str, Any]:
    """The model inputs with each row's own copy of its image's pixels: what a plain
    `model(**inputs)` forward takes (the learner's forward shares one vision pass instead)."""
    import torch

    images = encoded["images"]
    patches = torch.split(images["pixel_values"], images["image_grid_thw"].prod(dim=1).tolist())
    return {**encoded["model_inputs"], "pixel_values": torch.cat([patches[i] for i in images["rows"].tolist()])}


def token_logprobs(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every next token under `model` ([batch, tokens - 1])."""
    return token_logprobs_and_entropy(model, encoded, temperature)[0]


def token_logprobs_and_entropy(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every next token under `model` and the detached entropy of each position
    (both [batch, tokens - 1]), from one forward pass.

    Only positions from `first_target` on (where completions start) go through the LM head and
    the log-softmax; earlier positions, prompt and image tokens that no loss reads, hold 0."""
    import torch.nn.functional as F

    from learner.grpo import logprobs_and_entropy

    first = encoded.get("first_target", 0)
    inputs = {**encoded["model_inputs"], "mm_encoder_outputs": {"image": shared_image_features(model, encoded["images"])}}
    width = inputs["input_ids"].shape[1]
    # Keeping the last width - first logits and dropping the last one leaves positions first .. width - 2.
    logits = model(**inputs, logits_to_keep=width - first).logits[:, :-1]
    logprobs, entropy = logprobs_and_entropy(logits, encoded["targets"][:, first:], temperature)
    return F.pad(logprobs, (first, 0)), F.pad(entropy, (first, 0))


def shared_image_features(model, images: dict[str, Any]):
    """The vision tower's features of each distinct image, computed once and handed to every row
    that shows it (a `BaseModelOutputWithPooling` for the model's `mm_encoder_outputs`). The
    gradient of a shared feature is the sum over its rows, as with one vision pass per row."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inner = getattr(model, "module", model)  # a DeepSpeed engine wraps the (PEFT) model
    per_image = inner.get_image_features(images["pixel_values"], images["image_grid_thw"], return_dict=True).pooler_output
    return BaseModelOutputWithPooling(pooler_output=tuple(per_image[i] for i in images["rows"].tolist()))
