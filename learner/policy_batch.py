"""Turning rollout samples into learner tensors, and the learner's log-probs of completion tokens.

The learner re-processes each prompt with its own Hugging Face processor (which expands the image
placeholder into exactly as many image tokens as the image has merged patches) and appends the
completion token ids vLLM sampled. Token counts and image features therefore always agree, and
the image-token count equals vLLM's when both see the same `PolicySettings` (the processor built
with its pixel bounds, the image resized to them).

A group's G completions share one prompt and one image, and the forward pass shares them too:
the processor runs once per (prompt, image) of a step (`PromptCache`); in a micro-batch, each
distinct prompt (with its image) goes through the vision tower and the language model once, and
its G completions continue from its keys and values (`completion_logits`). Per group
that is P + G x C tokens instead of G x (P + C): with a prompt of a few hundred image and text
tokens and G = 4, most of a plain forward's work was the same prompt four times. The gradient
through a shared prompt is the sum over its completions, as with one copy per row; with LoRA
dropout, a group's completions see one dropout draw on their shared prompt instead of one each.
Logits and log-softmax are computed for completion tokens only.

Tensors are built on the CPU; the learner moves them to its engine's device (`learner.devices`).
"""

from __future__ import annotations

import functools
import inspect
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
    """A micro-batch as CPU tensors: each distinct (prompt, image) once, and each row's completion.
    `settings` (`PolicySettings`) resizes the images as every other stage does; None loads them
    unresized (the processor's own bounds apply). `prompts` keeps processed prompts across calls
    (pass one dict for all micro-batches of a step).

    - "prompts": the distinct prompts, left-padded (so each ends at the last column, where the
      first completion token is predicted), with their image tokens' types, images and grids;
    - "rows": which prompt each row continues;
    - "targets", "completion_attention", "mask", "rollout_logprobs": [rows, completion tokens],
      right-padded: the completion ids, 1 on real tokens, the sample's weight on real tokens (0 for
      padding samples), and the sampling engine's log-prob of each token;
    - "advantages": one per row.
    Log-probs (`token_logprobs`) come in the same [rows, completion tokens] layout."""
    import torch

    from skinr1.models.settings import PolicySettings

    settings = settings or PolicySettings()
    prompts = {} if prompts is None else prompts
    distinct: dict[int, int] = {}  # id(EncodedPrompt) -> its index among this batch's prompts
    unique: list[EncodedPrompt] = []
    rows: list[int] = []
    for sample in samples:
        prompt = cached_prompt(processor, sample, settings, prompts)
        if id(prompt) not in distinct:
            distinct[id(prompt)] = len(unique)
            unique.append(prompt)
        rows.append(distinct[id(prompt)])
    pad = processor.tokenizer.pad_token_id
    prompt_width = max(len(p.ids) for p in unique)
    prompt_ids = torch.full((len(unique), prompt_width), pad, dtype=torch.long)
    prompt_attention = torch.zeros((len(unique), prompt_width), dtype=torch.long)
    token_types = torch.zeros((len(unique), prompt_width), dtype=torch.long)
    for i, prompt in enumerate(unique):
        offset = prompt_width - len(prompt.ids)
        prompt_ids[i, offset:] = torch.tensor(prompt.ids)
        prompt_attention[i, offset:] = 1
        token_types[i, offset:] = torch.tensor(prompt.token_types)
    width = max(1, max(len(s.completion_ids) for s in samples))
    targets = torch.full((len(samples), width), pad, dtype=torch.long)
    completion_attention = torch.zeros((len(samples), width), dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.float32)
    rollout_logprobs = torch.zeros((len(samples), width), dtype=torch.float32)
    for i, sample in enumerate(samples):
        n = len(sample.completion_ids)
        targets[i, :n] = torch.tensor(sample.completion_ids, dtype=torch.long)
        completion_attention[i, :n] = 1
        mask[i, :n] = sample.weight
        rollout_logprobs[i, :n] = torch.tensor(sample.rollout_logprobs, dtype=torch.float32)
    return {
        "prompts": {
            "input_ids": prompt_ids,
            "attention_mask": prompt_attention,
            "mm_token_type_ids": token_types,
            "pixel_values": torch.cat([p.pixel_values for p in unique]),
            "image_grid_thw": torch.cat([p.image_grid_thw for p in unique]),
        },
        "rows": torch.tensor(rows, dtype=torch.long),
        "targets": targets,
        "completion_attention": completion_attention,
        "mask": mask,
        "rollout_logprobs": rollout_logprobs,
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float32),
    }


def token_logprobs(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every completion token under `model` ([rows, completion tokens]; 0 on padding),
    without the entropy: what no-grad scoring passes need (`learner.grpo.target_logprobs`)."""
    from learner.grpo import target_logprobs

    logits = completion_logits(model, encoded)
    return target_logprobs(logits, encoded["targets"], temperature, encoded["completion_attention"])


def token_logprobs_and_entropy(model, encoded: dict[str, Any], temperature: float):
    """Log-probs of every completion token under `model` and the detached entropy of the
    distribution each was drawn from (both [rows, completion tokens]): what a training pass needs."""
    from learner.grpo import logprobs_and_entropy

    return logprobs_and_entropy(completion_logits(model, encoded), encoded["targets"], temperature)


def completion_logits(model, encoded: dict[str, Any]):
    """The logits that predict each completion token ([rows, completion tokens, vocab]), from one
    forward pass of each distinct prompt and one of the completions that continue it.

    The prompt pass keeps its keys and values (and its last position's logits: the first
    completion token's distribution); they are copied to each row continuing that prompt, and the
    completions run on top, at the rotary positions that follow their prompt's."""
    import torch

    prompts, rows = encoded["prompts"], encoded["rows"]
    backbone = vision_language_model(model)
    positions, rope_deltas = backbone.get_rope_index(
        prompts["input_ids"], prompts["mm_token_type_ids"], prompts["image_grid_thw"],
        attention_mask=prompts["attention_mask"])
    features = backbone.get_image_features(prompts["pixel_values"], prompts["image_grid_thw"], return_dict=True)
    prefix = model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], position_ids=positions,
                   mm_token_type_ids=prompts["mm_token_type_ids"], image_grid_thw=prompts["image_grid_thw"],
                   mm_encoder_outputs={"image": features}, use_cache=True, logits_to_keep=1)
    logits = prefix.logits[rows]  # [rows, 1, vocab]: the first completion token's distribution
    targets = encoded["targets"]
    if targets.shape[1] > 1:
        cache = prefix.past_key_values
        cache.reorder_cache(rows)  # one copy of its prompt's keys and values per row (differentiable)
        # Text after the prompt continues at (attended prompt tokens + the prompt's rope delta).
        first = (prompts["attention_mask"].sum(dim=1, keepdim=True) + rope_deltas)[rows]
        steps = torch.arange(targets.shape[1] - 1, device=targets.device)
        completion_positions = (first + steps).unsqueeze(0).expand(3, -1, -1)
        # The last completion token predicts nothing that is scored: it is never an input.
        attention = torch.cat([prompts["attention_mask"][rows], encoded["completion_attention"][:, :-1]], dim=1)
        continued = model(input_ids=targets[:, :-1], attention_mask=attention, position_ids=completion_positions,
                          past_key_values=cache, use_cache=True)
        logits = torch.cat([logits, continued.logits], dim=1)
    return logits


def vision_language_model(model):
    """The Qwen2.5-VL backbone (rotary index, vision tower) inside a DeepSpeed engine and a PEFT
    wrapper; refuses a backbone that cannot take precomputed image features."""
    inner = getattr(model, "module", model)  # a DeepSpeed engine wraps the (PEFT) model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    require_precomputed_image_features(inner.model)
    return inner.model


def require_precomputed_image_features(backbone) -> None:
    """Raise unless `backbone.forward` takes `mm_encoder_outputs`. Releases before it (transformers
    5.17, the version of one CUDA image) accept the keyword into **kwargs and drop it: the prompt
    pass then runs without its image and every log-prob is wrong (3 nats per token on average in
    the level-1 GPU check), with no error."""
    if not _forward_takes_encoder_outputs(type(backbone)):
        import transformers

        raise RuntimeError(
            f"transformers {transformers.__version__}: {type(backbone).__name__}.forward takes no "
            "mm_encoder_outputs, so the learner cannot pass a prompt's image features once for its "
            "whole group; install the tested transformers (skinr1.versions.TESTED_VERSIONS)")


@functools.cache
def _forward_takes_encoder_outputs(backbone_class) -> bool:
    """Read once per class: the check runs on every forward pass."""
    return "mm_encoder_outputs" in inspect.signature(backbone_class.forward).parameters


def full_sequence_logits(model, encoded: dict[str, Any]):
    """The reference computation `completion_logits` equals: a plain forward over every
    row written out in full (its prompt, its own copy of the image, its completion), returning
    the logits that predict each completion token ([rows, completion tokens, vocab]). For tests
    and checks; it costs G prompt passes per group."""
    import torch

    prompts, rows, device = encoded["prompts"], encoded["rows"].tolist(), encoded["targets"].device
    patches = torch.split(prompts["pixel_values"], prompts["image_grid_thw"].prod(dim=1).tolist())
    sequences, types, starts = [], [], []
    for row, prompt in enumerate(rows):
        kept = prompts["attention_mask"][prompt].bool()
        length = int(encoded["completion_attention"][row].sum())
        sequences.append(torch.cat([prompts["input_ids"][prompt][kept], encoded["targets"][row, :length]]))
        types.append(torch.cat([prompts["mm_token_type_ids"][prompt][kept], torch.zeros(length, dtype=torch.long, device=device)]))
        starts.append(int(kept.sum()))
    width = max(len(s) for s in sequences)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)  # padding: masked out, any id does
    attention = torch.zeros_like(input_ids)
    token_types = torch.zeros_like(input_ids)
    for i, (sequence, kinds) in enumerate(zip(sequences, types)):
        input_ids[i, : len(sequence)], attention[i, : len(sequence)], token_types[i, : len(sequence)] = sequence, 1, kinds
    logits = model(input_ids=input_ids, attention_mask=attention, mm_token_type_ids=token_types,
                   pixel_values=torch.cat([patches[p] for p in rows]),
                   image_grid_thw=prompts["image_grid_thw"][encoded["rows"]]).logits
    completion = encoded["targets"].shape[1]
    index = torch.tensor(starts, device=device).unsqueeze(1) - 1 + torch.arange(completion, device=device)  # t predicts t + 1
    index = index.clamp(max=width - 1)
    return torch.gather(logits, 1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
