"""Percentile-bootstrap confidence intervals for accuracies and for paired accuracy differences.

A held-out set of a few hundred images measures an accuracy with a standard error of a few
points (0.5 accuracy on 300 images: about +-0.03), so two checkpoints a couple of points apart may
not differ at all. Every accuracy therefore carries a 95% interval, and a comparison of two
checkpoints carries the interval of their *paired* difference: both checkpoints answered the same
images, so resampling images (the same indices for both) removes the between-image variance that
two independent intervals would double count.

The functions are pure and seeded: the same inputs and seed give the same interval on every run,
so a re-rendered report does not change.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_MAX_DRAWS_PER_BLOCK = 1 << 22
"""Resampled indices held in memory at once (32 MiB of int64); pooled sets of many thousand records
are resampled in blocks of rows rather than as one resamples x n matrix."""


def resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (n draws with replacement) of `values`."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    n = len(values)
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_DRAWS_PER_BLOCK // n)
    means = [
        values[rng.integers(0, n, size=(min(block, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, block)
    ]
    return np.concatenate(means)


def percentile_interval(means: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    correct: Sequence[bool | float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval (low, high) of the mean of `correct` (per-record 0/1 outcomes).

    Resamples the records with replacement `resamples` times and takes the (1-level)/2 and
    (1+level)/2 quantiles of the resampled means. An empty input gives (0.0, 0.0), matching the 0.0
    accuracy the metrics report for an empty set, so the interval always brackets the estimate and
    stays JSON-serialisable.
    """
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return 0.0, 0.0
    return percentile_interval(resampled_means(values, resamples, seed), level)


def paired_difference_ci(
    a: Sequence[bool | float], b: Sequence[bool | float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Mean of b minus mean of a, with the percentile-bootstrap interval of that difference.

    a[i] and b[i] are the outcomes of the same record under two checkpoints; each resample draws
    the same record indices for both, so the interval reflects only how the checkpoints disagree
    record by record. Since mean(b[idx]) - mean(a[idx]) == mean((b - a)[idx]), this is the
    bootstrap of the per-record differences. Empty inputs give a zero difference and interval.
    """
    first, second = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"paired outcomes must have equal lengths, got {len(first)} and {len(second)}")
    if first.size == 0:
        return {"difference": 0.0, "low": 0.0, "high": 0.0}
    differences = second - first
    low, high = percentile_interval(resampled_means(differences, resamples, seed), level)
    return {"difference": float(second.mean() - first.mean()), "low": low, "high": high}
