"""Rollout requests and results as plain data, and the conversion to/from vLLM objects.

Kept free of Ray so it can be unit-tested and reused by evaluation and serving.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from skinr1.config.checks import at_least, within

# Special tokens the policy must never emit: a sampled <|image_pad|> makes the learner's forward
# fail with "image features and image tokens do not match".
VISION_SPECIAL_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
BLOCKED_LOGIT_BIAS = -100.0  # vLLM clamps logit_bias to [-100, 100]


@dataclass
class SamplingSettings:
    """How completions are sampled."""

    group_size: int = 4
    """Samples per prompt, G (paper: 4)."""
    temperature: float = 1.0
    """Sampling temperature (paper: 1.0). 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 1024
    """Longest completion (paper: 1024)."""

    def __post_init__(self) -> None:
        at_least("group_size", self.group_size, 1)
        at_least("temperature", self.temperature, 0)
        within("top_p", self.top_p, 0, 1, low_open=True)
        at_least("max_tokens", self.max_tokens, 1)


@dataclass
class RolloutRequest:
    """One prompt: chat-formatted text with a single unexpanded image placeholder, plus its image."""

    prompt_id: str
    prompt: str
    image: str | bytes
    """Path of the image, or its file's bytes when no other node could read the path (already
    validated when the batch was built)."""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One sampled completion."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


@dataclass
class RolloutResult:
    """All samples of one prompt, with the policy version that produced every one of them."""

    prompt_id: str
    prompt_token_ids: list[int]
    samples: list[Sample]
    policy_version: int
    actor: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def request_seed(call_seed: int | None, prompt_id: str) -> int | None:
    """The sampling seed of one prompt: a stable hash of the call's seed and the prompt's id.

    One seed for every prompt of a call would give sample k of every prompt the same random
    stream (correlated noise across the batch). Hashing the prompt id in makes each prompt's
    stream its own, and independent of which actor or batch the prompt lands in, so a retried or
    rebalanced prompt samples exactly what it would have. None stays None (unseeded).
    """
    if call_seed is None:
        return None
    digest = hashlib.blake2b(f"{call_seed}\x00{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF  # vLLM seeds a torch.Generator: keep it in int32


def vllm_sampling_params(settings: SamplingSettings, blocked_token_ids: list[int], seed: int | None,
                         n: int | None = None, detokenize: bool = True):
    """vLLM's sampling parameters for one prompt. `detokenize=False` leaves the text to the caller
    (`to_samples` with a tokenizer): vLLM's client process then decodes neither each new token
    incrementally nor the text of each returned log-prob, Python work per generated token that
    competes with the engine for the CPU (the README's "Decoding once per completion")."""
    from vllm import SamplingParams

    return SamplingParams(
        n=n or settings.group_size,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        logprobs=0,  # the sampled token's log-prob
        seed=seed,
        logit_bias={token: BLOCKED_LOGIT_BIAS for token in blocked_token_ids},
        skip_special_tokens=True,
        detokenize=detokenize,
    )


def completion_text(tokenizer, token_ids: list[int]) -> str:
    """The text of a completion decoded in one call, as vLLM's incremental detokenizer gives it:
    special tokens skipped, and the bytes of a character cut off by the length limit left out
    (a one-call decode turns them into U+FFFD; the incremental one holds them back for a next
    token that never comes)."""
    return tokenizer.decode(token_ids, skip_special_tokens=True).rstrip("\ufffd")


def to_samples(request_output, tokenizer=None) -> list[Sample]:
    """Extract per-token log-probs of the sampled tokens from a vLLM RequestOutput; `tokenizer`
    decodes the text of requests sampled with `detokenize=False` (None: vLLM's text)."""
    samples = []
    for completion in request_output.outputs:
        token_ids = list(completion.token_ids)
        logprobs: list[float] = []
        for token, candidates in zip(token_ids, completion.logprobs or []):
            entry = candidates.get(token) if candidates else None
            value = float(entry.logprob) if entry is not None else -math.inf
            logprobs.append(value if math.isfinite(value) else -1e4)
        if len(logprobs) != len(token_ids):
            raise RuntimeError("vLLM returned log-probs for fewer tokens than it sampled")
        text = completion.text if tokenizer is None else completion_text(tokenizer, token_ids)
        samples.append(Sample(text, token_ids, logprobs, str(completion.finish_reason)))
    return samples
