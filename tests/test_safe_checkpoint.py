"""Resuming never runs code planted in run_dir: checkpoint files are read with the weights-only
unpickler (learner.safe_checkpoint), DeepSpeed's included, and a legit checkpoint still resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from learner.group import free_port

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_is_refused_without_running(tmp_path):
    import torch

    from learner.safe_checkpoint import UnsafeCheckpointError, load_tensors_only

    marker = tmp_path / "MARKER"
    path = tmp_path / "state.pt"
    torch.save({"weights": torch.ones(2), "note": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*state.pt"):
        load_tensors_only(path)
    assert not marker.exists()


def test_tensors_and_plain_data_load(tmp_path):
    import torch

    from learner.safe_checkpoint import load_tensors_only

    path = tmp_path / "state.pt"
    torch.save({"weights": torch.arange(3.0), "step": 7, "shape": torch.Size([3]), "names": ["a", "b"]}, path)
    loaded = load_tensors_only(path)
    assert torch.equal(loaded["weights"], torch.arange(3.0)) and loaded["step"] == 7 and loaded["names"] == ["a", "b"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 0])
def test_deepspeed_resume_refuses_planted_pickles_and_resumes_legit_state(tmp_path, stage):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "safe_resume_worker.py"), str(tmp_path), str(stage), str(free_port())],
        capture_output=True, text=True, env=env, timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.split(" ")[0] in ("RESUMED", "REFUSED", "LOADED")]
    assert result.returncode == 0, result.stderr[-3000:]
    assert lines and lines[0] == "RESUMED", result.stdout
    planted = lines[1:]
    # Every file DeepSpeed reads on resume (model states, and the ZeRO optimizer shard at stage > 0).
    assert len(planted) >= (2 if stage else 1), planted
    assert all(line.startswith("REFUSED") for line in planted), planted
    assert not (tmp_path / "MARKER").exists(), "a planted pickle ran while loading"
