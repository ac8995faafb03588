"""Rewards for SkinR1's GRPO: pure reward terms, batch scoring, and the Ray reward actor.

Typical use::

    from rewards import RewardConfig, RewardScorer, build_sample
    scorer = RewardScorer(RewardConfig.preset("open"), resolver)
    sample = build_sample(resolver, "mel", mode="open", source="ham10000")
    result = scorer.score(completion, sample)   # result.reward, result.components, result.reasons

`rewards.actor` (RewardActor, RewardPool) imports Ray and is imported on its own.
"""

from __future__ import annotations

from rewards.config import MALIGNANCY_SOURCES, PRESETS, RewardConfig, parse_overrides
from rewards.functions import (
    differential_reward,
    format_reward,
    granularity_reward,
    hierarchical_reward,
    label_classes,
    malignancy_reward,
    path_credit,
)
from rewards.scoring import RewardResult, RewardSample, RewardScorer, build_sample, score_batch

__all__ = [
    "MALIGNANCY_SOURCES",
    "PRESETS",
    "RewardConfig",
    "RewardResult",
    "RewardSample",
    "RewardScorer",
    "build_sample",
    "differential_reward",
    "format_reward",
    "granularity_reward",
    "hierarchical_reward",
    "label_classes",
    "malignancy_reward",
    "parse_overrides",
    "path_credit",
    "score_batch",
]
