"""Micro-batch grouping by length: less padding, the same samples in every update."""

from __future__ import annotations

import pytest

from learner.micro_batches import micro_batch_indices


def _padded_tokens(lengths, batches):
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_arrival_order_without_sorting():
    assert micro_batch_indices([5, 1, 9, 3, 7], 2, 1, by_length=False) == [[0, 1], [2, 3], [4]]


def test_sorting_groups_similar_lengths_and_pads_less():
    lengths = [160, 20, 150, 30, 140, 25, 155, 35]  # groups of G=4 mix long and short answers
    arrival = micro_batch_indices(lengths, 4, 1, by_length=False)
    grouped = micro_batch_indices(lengths, 4, 1, by_length=True)
    assert grouped == [[1, 5, 3, 7], [4, 2, 6, 0]]
    assert _padded_tokens(lengths, grouped) < _padded_tokens(lengths, arrival)
    assert sorted(i for batch in grouped for i in batch) == list(range(len(lengths)))


def test_tuple_keys_keep_a_group_together_and_sort_its_completions():
    # (prompt length, group, completion length), as `encode_micro_batches` builds them: two groups
    # of G=2 whose prompts differ in length; each micro-batch then holds one prompt, run once.
    keys = [(90, 0, 40), (90, 0, 10), (60, 2, 30), (60, 2, 5)]
    assert micro_batch_indices(keys, 2, 1, by_length=True) == [[3, 2], [1, 0]]


def test_samples_stay_in_their_update():
    lengths = [9, 1, 8, 2, 7, 3, 6, 4]
    batches = micro_batch_indices(lengths, 2, updates=2, by_length=True)
    first, second = batches[:2], batches[2:]
    assert sorted(i for b in first for i in b) == [0, 1, 2, 3]  # the first update's samples, regrouped
    assert sorted(i for b in second for i in b) == [4, 5, 6, 7]
    assert first == [[1, 3], [2, 0]] and second == [[5, 7], [6, 4]]


def test_equal_lengths_keep_arrival_order_and_a_short_last_batch_keeps_its_size():
    assert micro_batch_indices([3, 3, 3, 3, 3], 2, 1, by_length=True) == [[0, 1], [2, 3], [4]]
    assert [len(b) for b in micro_batch_indices([5, 1, 4, 2, 3], 2, 1, by_length=True)] == [2, 2, 1]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="micro_batch_size"):
        micro_batch_indices([1, 2], 0, 1, by_length=True)


def test_a_scoring_pass_merges_score_micro_batch_size_over_micro_batch_size_micro_batches():
    from learner.grpo_config import LearnerConfig

    assert LearnerConfig(micro_batch_size=4).micro_batches_per_score_pass == 1  # unset: the micro-batch
    assert LearnerConfig(micro_batch_size=4, score_micro_batch_size=4).micro_batches_per_score_pass == 1
    assert LearnerConfig(micro_batch_size=4, score_micro_batch_size=16).micro_batches_per_score_pass == 4
