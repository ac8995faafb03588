"""The Ray path: chunks as tasks on a real local (loopback) Ray node give the same SFT set as one process."""

from __future__ import annotations

import json

import pytest

from skinr1.trajectories import TrajectoriesConfig, run
from skinr1.trajectories.build import effective_workers, split_chunks


def test_chunking_and_worker_choice():
    records = list(range(10))
    assert split_chunks(records, workers=2, chunk_size=0) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert split_chunks(records, workers=1, chunk_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert split_chunks([], workers=2, chunk_size=0) == []
    assert effective_workers(TrajectoriesConfig(num_workers=3), 5) == 3
    assert effective_workers(TrajectoriesConfig(), 5) == 1
    assert effective_workers(TrajectoriesConfig(parallel_threshold=5), 5) >= 1


@pytest.mark.slow
def test_ray_tasks_match_the_in_process_build(ray_local, tmp_path):
    from skinr1.data.synthetic import synthesize

    synthesize(tmp_path / "synthetic", scale=0.1)
    manifest = str(tmp_path / "synthetic" / "dense.jsonl")
    serial = run(TrajectoriesConfig(input=manifest, output_dir=str(tmp_path / "serial")))
    parallel = run(TrajectoriesConfig(input=manifest, output_dir=str(tmp_path / "ray"), num_workers=2, chunk_size=7))

    assert parallel["workers"] == 2 and parallel["chunks"] == -(-serial["totals"]["records"] // 7)
    assert parallel["totals"] == serial["totals"] and parallel["totals"]["rejected"] == 0
    assert parallel["per_type"] == serial["per_type"] and all(parallel["per_type"].values())
    serial_rows = (tmp_path / "serial" / "sft.jsonl").read_text()
    assert (tmp_path / "ray" / "sft.jsonl").read_text() == serial_rows  # same rows, same order
    assert json.loads(serial_rows.splitlines()[0])["metadata"]["verified"] is True
