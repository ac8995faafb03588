"""Which files of a bucket run's GRPO checkpoint belong to whom, and when it may be committed."""

from __future__ import annotations

import pytest

from learner.policy_start import PolicyStart
from skinr1.checkpoint_parts import IncompleteCheckpoint, driver_reads, merge_parts, missing_files, rank_reads

RANK0 = {"engine/latest": 5, "engine/state/mp_rank_00_model_states.pt": 100,
         "engine/state/zero_pp_rank_0_mp_rank_00_optim_states.pt": 300, "policy/adapter_model.safetensors": 80}
RANK1 = {"engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt": 300}
DRIVER = {"driver_state.json": 40}


def test_the_parts_of_every_writer_make_one_manifest():
    assert merge_parts([RANK0, RANK1, DRIVER], writers=3) == {**RANK0, **RANK1, **DRIVER}
    assert merge_parts([RANK0, {}, DRIVER], writers=3) == {**RANK0, **DRIVER}  # a rank may write nothing (DDP)


@pytest.mark.parametrize("parts, match", [
    ([RANK0, DRIVER], r"2 of 3 checkpoint parts"),
    ([RANK0, None, DRIVER], r"part 1 reported no files"),
    ([RANK0, {"engine/latest": 6}, DRIVER], r"engine/latest: two writers report 5 and 6 bytes"),
])
def test_a_missing_or_contradicting_part_is_refused(parts, match):
    with pytest.raises(IncompleteCheckpoint, match=match):
        merge_parts(parts, writers=3)


def test_the_marker_waits_for_every_file_at_its_reported_size():
    expected = {**RANK0, **RANK1}
    assert missing_files(expected, {**expected, "extra": 1}) == []
    present = {**RANK0, "engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt": 299}
    assert missing_files(expected, present) == [
        "engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt has 299 bytes, its writer reported 300"]
    assert missing_files(expected, RANK0) == ["engine/state/zero_pp_rank_1_mp_rank_00_optim_states.pt is missing"]


def test_a_resumed_rank_reads_the_engine_state_and_the_driver_the_rest():
    files = {**RANK0, **RANK1, **DRIVER}
    # DeepSpeed's loader reads every rank's optimizer shard, so each rank gets them all.
    assert rank_reads(files) == sorted(n for n in files if n.startswith("engine/"))
    assert driver_reads(files) == ["driver_state.json", "policy/adapter_model.safetensors"]
    assert rank_reads(["engineering/notes.txt"]) == [] and driver_reads(["engineering/notes.txt"]) == ["engineering/notes.txt"]


def test_a_policy_start_maps_every_location_it_has():
    start = PolicyStart(base="/run/base", adapter="/run/sft/final", reference="/run/merged")
    assert start.map(lambda p: "s3://b" + p) == PolicyStart("s3://b/run/base", "s3://b/run/sft/final", "s3://b/run/merged")
    assert PolicyStart(base="hub/model").map(str.upper) == PolicyStart(base="HUB/MODEL")
