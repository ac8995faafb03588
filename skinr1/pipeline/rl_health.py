"""What a GRPO step's rollouts and rewards looked like, as pure functions, and the checks that
stop a run whose numbers would otherwise be silently wrong.

A reward of 0 can mean "wrong answer" or "the scorer crashed" (`internal_error`) or "the sample
had bad metadata" (`invalid_sample`); a truncated completion looks like a malformed answer. The
step's metrics keep these apart, and a run stops when scoring errors pass `max_error_rate`.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Sequence

SCORING_ERRORS = ("internal_error", "invalid_sample")
"""Reason codes that mean the reward was not computed, rather than computed as 0."""


class RewardHealthError(RuntimeError):
    """Too many samples of a step could not be scored: training on them would learn from noise."""


def reward_summary(scored: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and spread of the rewards, and the mean of each reward term ("reward_<term>")."""
    rewards = [record["reward"] for record in scored]
    summary = {"reward_mean": statistics.fmean(rewards) if rewards else 0.0,
               "reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0, "samples": len(rewards)}
    components: dict[str, list[float]] = {}
    for record in scored:
        for name, value in record.get("components", {}).items():
            components.setdefault(name, []).append(value)
    summary.update({f"reward_{name}": statistics.fmean(values) for name, values in components.items()})
    return summary


def rollout_stats(results: Sequence[Any]) -> dict[str, float]:
    """Completion lengths and how generation ended, over every sample of `results` (RolloutResults)."""
    samples = [sample for result in results for sample in result.samples]
    if not samples:
        return {}
    lengths = [len(sample.token_ids) for sample in samples]
    reasons = Counter(sample.finish_reason for sample in samples)
    return {
        "completion_len_mean": statistics.fmean(lengths),
        "completion_len_max": max(lengths),
        # vLLM's finish_reason is "length" when max_tokens cut the completion off.
        "truncation_rate": reasons.get("length", 0) / len(samples),
    }


def reason_shares(scored: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of samples carrying each reward reason code ("term:code", or a bare error code)."""
    if not scored:
        return {}
    counts = Counter(reason for record in scored for reason in set(record.get("reasons", [])))
    return {reason: count / len(scored) for reason, count in sorted(counts.items())}


def scoring_error_rate(scored: Sequence[dict[str, Any]]) -> float:
    """Share of samples whose reward could not be computed (see SCORING_ERRORS)."""
    if not scored:
        return 0.0
    failed = sum(any(reason in SCORING_ERRORS for reason in record.get("reasons", [])) for record in scored)
    return failed / len(scored)


def check_scoring(scored: Sequence[dict[str, Any]], max_error_rate: float) -> float:
    """The step's scoring error rate; raises RewardHealthError above `max_error_rate`, naming an error."""
    rate = scoring_error_rate(scored)
    if rate > max_error_rate:
        example = next((r.get("error") or r.get("reasons") for r in scored
                        if any(x in SCORING_ERRORS for x in r.get("reasons", []))), None)
        raise RewardHealthError(
            f"{rate:.1%} of this step's samples could not be scored (limit rl.max_reward_error_rate="
            f"{max_error_rate}); first error: {example}"
        )
    return rate
