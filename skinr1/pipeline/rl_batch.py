"""From prompts to a GRPO training batch, as pure functions: the prompt stream, groups, filtering.

The prompt stream is a deterministic function of (seed, cursor): the data cursor in a checkpoint is
all that is needed to resume with exactly the data an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from learner.data_order import epoch_order
from learner.grpo import constant_groups, group_advantages, step_denominator
from learner.policy_batch import TrainSample


def stream_indices(num_records: int, seed: int, cursor: int, count: int) -> list[int]:
    """Record indices at positions [cursor, cursor + count) of the endless shuffled stream."""
    if num_records < 1:
        raise ValueError("the RL manifest has no usable records")
    indices = []
    for position in range(cursor, cursor + count):
        epoch, offset = divmod(position, num_records)
        indices.append(int(epoch_order(num_records, seed, epoch)[offset]))
    return indices


@dataclass
class Group:
    """The G scored completions of one prompt."""

    prompt_id: str
    prompt: str
    image: str | bytes
    completion_ids: list[list[int]]
    rollout_logprobs: list[list[float]]
    rewards: list[float]
    policy_version: int


def group_rewards_tensor(groups: Sequence[Group]) -> torch.Tensor:
    return torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float64)


def split_constant(groups: Sequence[Group], group_size: int) -> tuple[list[Group], list[Group]]:
    """(informative groups, all-equal-reward groups)."""
    if not groups:
        return [], []
    constant = constant_groups(group_rewards_tensor(groups), group_size).tolist()
    kept = [g for g, c in zip(groups, constant) if not c]
    dropped = [g for g, c in zip(groups, constant) if c]
    return kept, dropped


def train_samples(groups: Sequence[Group], group_size: int, target_groups: int, scaling: str, std_floor: float,
                  unbiased_std: bool = False, std_epsilon: float = 0.0) -> list[TrainSample]:
    """Advantage-weighted samples for `target_groups` groups; missing groups are zero-weight padding.

    Padding repeats a real sample with weight 0, so every learner rank runs the same number of
    micro-batches (DeepSpeed's accumulation boundary) while contributing no gradient.
    """
    if not groups:
        raise ValueError("no groups to train on")
    chosen = list(groups)[:target_groups]
    advantages = group_advantages(group_rewards_tensor(chosen), group_size, scaling, std_floor,
                                  unbiased_std=unbiased_std, std_epsilon=std_epsilon).tolist()
    samples = []
    for index, group in enumerate(chosen):
        for k in range(group_size):
            samples.append(
                TrainSample(group.prompt, group.image, group.completion_ids[k], group.rollout_logprobs[k],
                            advantages[index * group_size + k])
            )
    filler = samples[0]
    while len(samples) < target_groups * group_size:
        samples.append(TrainSample(filler.prompt, filler.image, filler.completion_ids, filler.rollout_logprobs, 0.0, weight=0.0))
    return samples


def step_size(samples: Sequence[TrainSample], aggregation: str) -> float:
    """What the step's loss is averaged over (learner.grpo.step_denominator), at least 1."""
    return max(1.0, step_denominator([len(s.completion_ids) for s in samples], [s.weight for s in samples], aggregation))
