"""Bootstrap intervals of accuracies and of paired accuracy differences."""

from __future__ import annotations

import pytest

from skinr1.eval.bootstrap import bootstrap_ci, paired_difference_ci


def test_interval_contains_the_mean_and_shrinks_with_n():
    small = bootstrap_ci([1, 0, 0] * 30)    # accuracy 1/3 on 90 records
    large = bootstrap_ci([1, 0, 0] * 300)   # the same accuracy on 900 records
    for low, high in (small, large):
        assert low < 1 / 3 < high
    assert large[1] - large[0] < (small[1] - small[0]) / 2  # width ~ 1/sqrt(n): 10x the records, ~1/3 the width


def test_interval_width_follows_the_level():
    outcomes = [True, False] * 50
    narrow, wide = bootstrap_ci(outcomes, level=0.5), bootstrap_ci(outcomes, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_interval_is_deterministic_for_a_seed():
    outcomes = [1, 0, 1, 1, 0, 0, 0, 1, 0, 1] * 5
    assert bootstrap_ci(outcomes, seed=3) == bootstrap_ci(outcomes, seed=3)
    assert bootstrap_ci(outcomes, seed=3) != bootstrap_ci(outcomes, seed=4)  # the seed is what fixes it


def test_degenerate_and_empty_inputs():
    assert bootstrap_ci([True] * 40) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 40) == (0.0, 0.0)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_resampling_in_blocks_keeps_every_resample(monkeypatch):
    import numpy as np

    import skinr1.eval.bootstrap as bootstrap

    # 7 resamples of 100 records per block: 72 blocks, the last one short
    monkeypatch.setattr(bootstrap, "_MAX_DRAWS_PER_BLOCK", 100 * 7)
    means = bootstrap.resampled_means(np.array([1.0, 0.0] * 50), resamples=500, seed=0)
    assert means.shape == (500,)
    assert len(set(means.tolist())) > 10  # blocks draw fresh indices, not one block repeated
    low, high = bootstrap_ci([1, 0] * 50, resamples=500)
    assert low < 0.5 < high


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1, 0], level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([1, 0], resamples=0)


def test_paired_difference_of_identical_vectors_is_zero():
    outcomes = [1, 0, 0, 1, 1] * 20
    assert paired_difference_ci(outcomes, outcomes) == {"difference": 0.0, "low": 0.0, "high": 0.0}


def test_consistent_improvement_has_an_interval_above_zero():
    a = [1] * 100 + [0] * 100
    b = [1] * 140 + [0] * 60  # right on 40 records that a got wrong, wrong on none that a got right
    result = paired_difference_ci(a, b)
    assert result["difference"] == pytest.approx(0.2)
    assert 0 < result["low"] < 0.2 < result["high"]


def test_pairing_detects_what_separate_intervals_cannot():
    a = [1] * 100 + [0] * 100
    b = [1] * 110 + [0] * 90  # +0.05: 10 records gained, none lost
    a_low, a_high = bootstrap_ci(a)
    b_low, b_high = bootstrap_ci(b)
    assert b_low < a_high  # the two accuracies' own intervals overlap...
    assert paired_difference_ci(a, b)["low"] > 0  # ...but resampling the same records for both shows a gain


def test_as_many_records_lost_as_gained_is_noise():
    a = [1] * 30 + [0] * 30 + [1] * 70 + [0] * 70
    b = [0] * 30 + [1] * 30 + [1] * 70 + [0] * 70  # 30 lost, 30 gained, the rest unchanged
    result = paired_difference_ci(a, b)
    assert result["difference"] == 0.0
    assert result["low"] < 0 < result["high"]


def test_paired_difference_sign_and_lengths():
    assert paired_difference_ci([1, 1, 1, 1], [0, 0, 0, 0]) == {"difference": -1.0, "low": -1.0, "high": -1.0}
    assert paired_difference_ci([], []) == {"difference": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference_ci([1, 0, 1], [1, 0])
