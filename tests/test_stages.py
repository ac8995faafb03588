"""Stage reuse: a finished stage is reused only while its settings and input artifacts are unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from skinr1.pipeline.stages import UnfinishedStageConflict, artifact_identity, run_stage


def test_identity_changes_when_an_input_is_rebuilt(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    stat = (tmp_path / "a.txt").stat()
    first = artifact_identity(tmp_path)
    assert artifact_identity(tmp_path) == first
    (tmp_path / "a.txt").write_text("two")  # same path and size, new content
    os.utime(tmp_path / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time
    assert artifact_identity(tmp_path) != first
    assert artifact_identity(tmp_path / "a.txt")["path"].endswith("a.txt")


def test_identity_of_a_copy_is_the_same(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "w.bin").write_bytes(b"weights")
    first = artifact_identity(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)  # new modification times
    os.utime(tmp_path / "b" / "sub" / "w.bin", ns=(1, 1))
    assert artifact_identity(tmp_path / "b")["digest"] == first["digest"]


def test_a_stage_with_paths_inside_the_run_dir_is_reused_after_the_run_dir_moves(tmp_path, capsys):
    """A copied run directory reuses its stages, and the reused result points into the copy."""
    def settings(root: Path) -> dict:
        return {"data": artifact_identity(root / "data.jsonl"), "base": str(root / "base_model"), "lr": 1,
                "outside": "/opt/models/base"}

    def work(root: Path):
        def run() -> dict:
            (root / "stage" / "final").mkdir(parents=True)
            return {"final": str(root / "stage" / "final"), "n": 1}
        return run

    first = tmp_path / "first"
    first.mkdir()
    (first / "data.jsonl").write_text('{"x": 1}\n')
    assert run_stage("s", first / "stage", settings(first), work(first), root=first)["reused"] is False
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-r", str(first), str(moved)], check=True)
    shutil.rmtree(first)
    result = run_stage("s", moved / "stage", settings(moved), work(moved), root=moved)
    assert result["reused"] is True
    assert result["final"] == str(moved / "stage" / "final")
    # A changed input inside the moved run is still noticed.
    (moved / "data.jsonl").write_text('{"x": 2}\n')
    assert run_stage("s", moved / "stage", settings(moved), work(moved), root=moved)["reused"] is False


def test_a_copied_run_dir_reuses_its_data_and_trajectories(tmp_path, capsys):
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline import stages

    demo = Path(stages.__file__).resolve().parents[1] / "configs" / "demo.yaml"
    overrides = ["data.synthetic_scale=0.05"]
    config = load_run_config(demo, [f"run_dir={tmp_path / 'demo'}", *overrides])
    stages.trajectories_stage(config, stages.data_stage(config))
    subprocess.run(["cp", "-r", str(tmp_path / "demo"), str(tmp_path / "copy")], check=True)
    capsys.readouterr()
    copy = load_run_config(demo, [f"run_dir={tmp_path / 'copy'}", *overrides])
    sft_data = stages.trajectories_stage(copy, stages.data_stage(copy))
    out = capsys.readouterr().out
    assert "[data] reusing" in out and "[trajectories] reusing" in out, out
    assert sft_data == tmp_path / "copy" / "trajectories" / "sft.jsonl"


def test_finished_stage_is_reused_and_recomputed_from_scratch_when_settings_change(tmp_path):
    calls = []

    def work():
        calls.append(1)
        (tmp_path / "stage" / f"output-{len(calls)}").write_text("x")
        return {"n": len(calls)}

    directory = tmp_path / "stage"
    assert run_stage("s", directory, {"lr": 1}, work)["n"] == 1
    assert run_stage("s", directory, {"lr": 1}, work)["reused"] is True
    assert run_stage("s", directory, {"lr": 2}, work)["n"] == 2
    # The old run's outputs (checkpoints, in a real stage) were cleared, not resumed from.
    assert sorted(p.name for p in directory.iterdir()) == ["output-2", "stage.json"]


def test_unfinished_stage_keeps_its_partial_work_for_resume(tmp_path):
    directory = tmp_path / "stage"
    directory.mkdir()
    (directory / "checkpoint").write_text("partial")  # a crashed run: no marker yet
    assert run_stage("s", directory, {"lr": 1}, lambda: {"ok": True})["ok"]
    assert (directory / "checkpoint").is_file()


def test_unfinished_stage_started_with_other_settings_is_neither_resumed_nor_discarded(tmp_path):
    directory = tmp_path / "stage"

    def crash():
        (directory / "checkpoint").write_text("made with lr 1")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_stage("s", directory, {"lr": 1}, crash)
    with pytest.raises(UnfinishedStageConflict, match="--fresh"):
        run_stage("s", directory, {"lr": 2}, lambda: {"ok": True})
    assert (directory / "checkpoint").read_text() == "made with lr 1"  # nothing lost
    # The same settings resume it; --fresh starts over.
    assert run_stage("s", directory, {"lr": 1}, lambda: {"resumed": (directory / "checkpoint").is_file()})["resumed"]
    assert not (directory / "stage.pending.json").exists()
    assert run_stage("s", directory, {"lr": 2}, lambda: {"resumed": (directory / "checkpoint").is_file()}, fresh=True)["resumed"] is False


def test_rl_fingerprint_ignores_how_the_run_is_operated():
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline.stages import rl_training_identity

    base = rl_training_identity(load_run_config(None, []).rl)
    operated = load_run_config(None, ["rl.stop_after_step=1", "rl.rollout.max_workers=4", "rl.probe_every=5",
                                      "rl.checkpoint_every=3", "rl.rollout.resources.num_cpus=2"]).rl
    assert rl_training_identity(operated) == base  # a crash drill or a bigger pool resumes the same run
    assert rl_training_identity(load_run_config(None, ["rl.learner.learning_rate=3e-4"]).rl) != base
