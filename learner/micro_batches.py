"""Which samples of a rank's share go into which micro-batch, in training order.

A micro-batch runs each distinct prompt once (left-padded to its longest prompt) and each row's
completion on top (right-padded to its longest completion), so rows that share a prompt, and
prompts and completions of similar length, waste less work together. The step's loss is a sum of
per-token (or per-sequence) terms over every sample of an update, whatever micro-batch a sample
sits in (`learner.grpo.mean_over_step`), so regrouping samples inside one
update changes only float summation order. Samples never move between updates: with several
updates per step, each one trains on the same samples as without sorting.

The no-grad scoring before training (the KL reference's log-probs; the old log-probs when a step
has several updates) may merge consecutive micro-batches into larger passes (`score_in_passes`,
`rl.learner.score_micro_batch_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


def micro_batch_indices(lengths: Sequence, micro_batch_size: int, updates: int, by_length: bool) -> list[list[int]]:
    """Sample indices of each micro-batch: consecutive chunks of `micro_batch_size`, as they arrive,
    or (`by_length`) regrouped within each update's chunks in the order of `lengths` (any sortable
    key per sample: a token count, or a tuple), so rows of similar length share a micro-batch. The
    first `updates` equal runs of micro-batches are the updates (a remainder after them stays as it was)."""
    if micro_batch_size < 1 or updates < 1:
        raise ValueError(f"micro_batch_size and updates must be >= 1, got {micro_batch_size}, {updates}")
    count = len(lengths)
    batches = [list(range(start, min(start + micro_batch_size, count))) for start in range(0, count, micro_batch_size)]
    if not by_length:
        return batches
    per_update = len(batches) // updates
    ordered: list[list[int]] = []
    for update in range(updates):
        chunk = batches[update * per_update : (update + 1) * per_update]
        members = sorted((i for batch in chunk for i in batch), key=lambda i: lengths[i])  # stable: ties keep order
        sizes = [len(batch) for batch in chunk]
        for size in sizes:
            ordered.append(members[:size])
            members = members[size:]
    return ordered + batches[updates * per_update :]


@dataclass
class StepMicroBatches:
    """A rank's step split into micro-batches, in training order."""

    samples: list
    """The rank's samples of the step, as they arrived."""
    order: list[list[int]]
    """Indices into `samples` of each micro-batch."""
    encoded: list[dict]
    """Each micro-batch's tensors (`learner.policy_batch.encode_batch`)."""
    prompts: dict
    """The step's processed (prompt, image) pairs (`PromptCache`), shared by every encoding of it."""


def encode_micro_batches(processor, samples, settings, micro_batch_size: int, updates: int, by_length: bool) -> StepMicroBatches:
    """A rank's step as encoded micro-batches (CPU tensors, `learner.policy_batch.encode_batch`), in
    training order (`micro_batch_indices`), each (prompt, image) processed once for the whole step."""
    from learner.policy_batch import PromptCache, cached_prompt, encode_batch

    prompts: PromptCache = {}  # a group's G samples share one processed prompt and image
    encoded = [cached_prompt(processor, s, settings, prompts) for s in samples]
    first_seen: dict[int, int] = {}  # id(EncodedPrompt) -> its group's first sample
    for index, prompt in enumerate(encoded):
        first_seen.setdefault(id(prompt), index)
    # A group's rows stay together (its prompt runs once), prompts by length, completions by length.
    keys = [(len(prompt.ids), first_seen[id(prompt)], len(s.completion_ids)) for prompt, s in zip(encoded, samples)]
    order = micro_batch_indices(keys, micro_batch_size, updates, by_length)
    batches = [encode_batch(processor, [samples[i] for i in indices], settings, prompts) for indices in order]
    return StepMicroBatches(list(samples), order, batches, prompts)


def score_in_passes(score: Callable, step: StepMicroBatches, processor, settings, micro_batches_per_pass: int) -> list:
    """`score(encoding)` ([rows, completion tokens], e.g. the reference's log-probs) of every
    micro-batch of `step`, computed over passes of `micro_batches_per_pass` consecutive micro-batches
    encoded together: fewer passes cost less per-pass overhead (a pass's size is bounded by the
    logits of its completion tokens, not by activations kept for a backward pass). Each micro-batch
    gets back its own rows, cut to its own completion width; a row's values do not depend on the
    rows beside it (causal attention, padding masked) beyond float rounding.
    With one micro-batch per pass, the micro-batches' own encodings are scored."""
    from learner.policy_batch import encode_batch

    if micro_batches_per_pass < 1:
        raise ValueError(f"micro_batches_per_pass must be >= 1, got {micro_batches_per_pass}")
    if micro_batches_per_pass == 1:
        return [score(batch) for batch in step.encoded]
    scores = []
    for first in range(0, len(step.order), micro_batches_per_pass):
        chunk = step.order[first : first + micro_batches_per_pass]
        merged = encode_batch(processor, [step.samples[i] for indices in chunk for i in indices], settings, step.prompts)
        values = score(merged)
        row = 0
        for indices, batch in zip(chunk, step.encoded[first : first + micro_batches_per_pass]):
            scores.append(values[row : row + len(indices), : batch["targets"].shape[1]])
            row += len(indices)
    return scores
