"""Deterministic, resumable sample order for data-parallel training.

The order of samples is a pure function of (seed, epoch); which samples a rank sees at a given
optimizer step is a pure function of (order, step, rank). A resumed run therefore recomputes exactly
the batches an uninterrupted run would have seen, with no loader state to save beyond the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's samples are split across ranks and micro-batches."""

    num_samples: int
    micro_batch_size: int
    world_size: int
    grad_accum_steps: int

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "world_size", "grad_accum_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_samples < self.global_batch_size:
            raise ValueError(
                f"{self.num_samples} samples cannot fill one global batch of {self.global_batch_size} "
                f"(micro {self.micro_batch_size} x ranks {self.world_size} x accumulation {self.grad_accum_steps})"
            )

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.world_size * self.grad_accum_steps

    @property
    def steps_per_epoch(self) -> int:
        # The last incomplete global batch of an epoch is left out so every step has the same size.
        return self.num_samples // self.global_batch_size


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(num_samples), the same for the same (seed, epoch) on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def step_indices(layout: BatchLayout, seed: int, step: int) -> np.ndarray:
    """Sample indices of global optimizer `step` (0-based, counting across epochs), in rank-major order."""
    epoch, step_in_epoch = divmod(step, layout.steps_per_epoch)
    order = epoch_order(layout.num_samples, seed, epoch)
    start = step_in_epoch * layout.global_batch_size
    return order[start : start + layout.global_batch_size]


def rank_micro_batches(layout: BatchLayout, seed: int, step: int, rank: int) -> list[list[int]]:
    """The micro-batches (lists of sample indices) that `rank` processes at `step`."""
    if not 0 <= rank < layout.world_size:
        raise ValueError(f"rank {rank} outside world size {layout.world_size}")
    indices = step_indices(layout, seed, step)
    per_rank = layout.micro_batch_size * layout.grad_accum_steps
    mine = indices[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i : i + layout.micro_batch_size].tolist() for i in range(0, per_rank, layout.micro_batch_size)]
