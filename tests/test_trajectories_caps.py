"""Caps on trajectories per (diagnosis, type) and per type: the pure selection and the build."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from skinr1.trajectories import TrajectoriesConfig, run
from skinr1.trajectories.caps import CAPPED_PER_DIAGNOSIS_TYPE, CAPPED_PER_TYPE, cap_reasons


def test_no_caps_keep_everything():
    keys = [("direct", "a")] * 5
    assert cap_reasons(keys, [0.5] * 5, 0, 0) == [None] * 5


def test_per_diagnosis_and_type_cap_follows_the_order_not_the_input():
    keys = [("direct", "a")] * 4 + [("ddx_keep", "a"), ("direct", "b")]
    order = [0.9, 0.1, 0.5, 0.3, 0.2, 0.8]
    assert cap_reasons(keys, order, 2, 0) == [CAPPED_PER_DIAGNOSIS_TYPE, None, CAPPED_PER_DIAGNOSIS_TYPE, None, None, None]


def test_per_type_cap_counts_only_what_is_kept():
    keys = [("direct", "a"), ("direct", "a"), ("direct", "b"), ("direct", "c"), ("ddx_keep", "c")]
    # The second "a" is refused by the per-diagnosis cap and leaves room for "b" under the type cap.
    assert cap_reasons(keys, [0.1, 0.2, 0.3, 0.4, 0.5], 1, 2) == [None, CAPPED_PER_DIAGNOSIS_TYPE, None, CAPPED_PER_TYPE, None]


def test_ties_keep_input_order_and_bad_arguments_are_errors():
    assert cap_reasons([("direct", "a")] * 3, [0.0] * 3, 1, 0) == [None, CAPPED_PER_DIAGNOSIS_TYPE, CAPPED_PER_DIAGNOSIS_TYPE]
    with pytest.raises(ValueError, match="order"):
        cap_reasons([("direct", "a")], [], 1, 1)
    with pytest.raises(ValueError, match=">= 0"):
        cap_reasons([], [], -1, 0)


def test_config_validates_the_caps():
    with pytest.raises(ValueError, match="max_per_type"):
        TrajectoriesConfig(max_per_type=-1)
    with pytest.raises(ValueError, match="max_per_diagnosis_per_type"):
        TrajectoriesConfig(max_per_diagnosis_per_type=1.5)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    from skinr1.data.synthetic import synthesize

    out = tmp_path_factory.mktemp("synthetic")
    synthesize(out, scale=0.1)
    return [json.loads(line) for line in (out / "dense.jsonl").read_text().splitlines()]


def _build(records, tmp_path, name, **caps):
    manifest = tmp_path / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = TrajectoriesConfig(input=str(manifest), output_dir=str(tmp_path / name), **caps)
    config.types.random_ddx_keep = config.types.random_ddx_switch = 0.3
    report = run(config)
    rows = [json.loads(line) for line in (tmp_path / name / "sft.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / name / "rejects.jsonl").read_text().splitlines()]
    return report, rows, rejects


def test_build_respects_the_caps_whatever_the_manifest_order(dense, tmp_path):
    report, rows, rejects = _build(dense, tmp_path, "capped", max_per_diagnosis_per_type=2, max_per_type=8)
    kept = Counter((r["metadata"]["trajectory_type"], r["metadata"]["node_id"]) for r in rows)
    per_type = Counter(r["metadata"]["trajectory_type"] for r in rows)
    assert max(kept.values()) == 2 and max(per_type.values()) == 8
    assert {r["reason"] for r in rejects} == {CAPPED_PER_DIAGNOSIS_TYPE, CAPPED_PER_TYPE}
    assert report["totals"]["records"] == len(dense) == len(rows) + len(rejects)
    assert [r["id"] for r in rows] == [r["record_id"] for r in dense if r["record_id"] in {x["id"] for x in rows}]

    shuffled = list(dense)
    random.Random(1).shuffle(shuffled)
    _, rows_again, _ = _build(shuffled, tmp_path, "shuffled", max_per_diagnosis_per_type=2, max_per_type=8)
    assert sorted(r["id"] for r in rows_again) == sorted(r["id"] for r in rows)


def test_caps_off_change_nothing(dense, tmp_path):
    _, rows, rejects = _build(dense, tmp_path, "uncapped")
    assert len(rows) == len(dense) and rejects == []
