"""Crash-safe commits: the process is killed (os._exit) at every crash point of a commit in turn;
after `recover` the committed directory is always the complete old version or the complete new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skinr1.atomic import CRASH_ENV, CRASH_EXIT_CODE, atomic_directory, recover
from skinr1.pipeline import rl_checkpoint

OLD = {"weights.bin": "old-weights", "sub/config.json": "old-config", "driver_state.json": '{"v": "old"}'}
NEW = {"weights.bin": "new-weights" * 50, "sub/config.json": "new-config", "sub/deep/extra.txt": "extra",
       "driver_state.json": '{"v": "new"}'}

CHILD = r"""
import json, sys
from pathlib import Path
from skinr1.atomic import atomic_directory
from skinr1.pipeline import rl_checkpoint

mode, root, files = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])

def write(directory):
    for name, text in files.items():
        if name == "driver_state.json" and mode == "checkpoint":
            continue  # commit_checkpoint writes the state itself
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

if mode == "directory":
    with atomic_directory(root / "final") as staging:
        write(staging)
else:
    staging = rl_checkpoint.staging_directory(root, 2)
    write(staging)
    rl_checkpoint.commit_checkpoint(staging, root, 2, json.loads(files["driver_state.json"]), keep=2)
"""


def _write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _contents(directory: Path) -> dict[str, str] | None:
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _commit_with_crash(mode: str, root: Path, k: int) -> int:
    env = os.environ | {CRASH_ENV: str(k)}
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(root), json.dumps(NEW)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, CRASH_EXIT_CODE), done.stderr
    return done.returncode


def _crash_at_every_point(make_world, check_world) -> int:
    """Crash at point 0, 1, 2, ... until a commit runs to the end; returns how many crashes it took."""
    k = 0
    while True:
        root = make_world(k)
        code = _commit_with_crash(*root)
        check_world(root[1], crashed=code == CRASH_EXIT_CODE)
        if code == 0:
            return k
        k += 1
        assert k < 200, "the commit never finished"


@pytest.mark.parametrize("with_old", [True, False], ids=["replace", "first-commit"])
def test_directory_commit_survives_a_crash_at_every_point(tmp_path, with_old):
    def make_world(k):
        root = tmp_path / f"crash-{k}"
        if with_old:
            _write(root / "final", OLD)
        return "directory", root, k

    def check(root, crashed):
        recover(root)
        found = _contents(root / "final")
        allowed = [NEW, OLD] if with_old else [NEW, None]
        assert found in allowed, f"after recovery: {found}"
        if not crashed:
            assert found == NEW
        assert [p.name for p in root.iterdir()] == (["final"] if found is not None else [])

    crashes = _crash_at_every_point(make_world, check)
    # fsync'd staging, old retired, new placed, each file of the old one deleted
    assert crashes >= (3 + len(OLD) if with_old else 2)


def test_recommitting_a_checkpoint_step_survives_a_crash_at_every_point(tmp_path):
    """Step 2 is committed again (a resumed run redoing it) with keep=2, so step 1 is pruned too."""
    old_state = json.loads(OLD["driver_state.json"])

    def make_world(k):
        root = tmp_path / f"crash-{k}"
        for step, files in ((0, OLD), (1, OLD), (2, OLD)):
            staging = rl_checkpoint.staging_directory(root, step)
            _write(staging, {n: t for n, t in files.items() if n != "driver_state.json"})
            rl_checkpoint.commit_checkpoint(staging, root, step, old_state, keep=3)
        return "checkpoint", root, k

    new_state = json.dumps(json.loads(NEW["driver_state.json"]), indent=2)
    old_state_text = json.dumps(old_state, indent=2)
    new = NEW | {"driver_state.json": new_state}
    old = OLD | {"driver_state.json": old_state_text}

    def check(root, crashed):
        latest = rl_checkpoint.latest_checkpoint(root)  # recovers first
        assert latest.name == "step-000002"
        assert _contents(latest) in ([new, old] if crashed else [new])
        for checkpoint in rl_checkpoint.list_checkpoints(root):
            assert _contents(checkpoint) in (new, old), f"{checkpoint.name} is partial"
        names = sorted(p.name for p in (root / "checkpoints").iterdir())
        assert all(not n.startswith(".") for n in names), names
        if not crashed:
            assert names == ["step-000001", "step-000002"]

    crashes = _crash_at_every_point(make_world, check)
    assert crashes >= 3 + len(OLD) + 1 + len(OLD)  # the commit, then the pruning of step 0


def test_recover_touches_only_the_named_directory(tmp_path):
    (tmp_path / ".a.123.tmp").mkdir()
    (tmp_path / ".b.456.tmp").mkdir()
    (tmp_path / ".a.old").mkdir()
    assert recover(tmp_path, "a") == ["removed .a.123.tmp (unfinished)", "restored a from .a.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.456.tmp", "a"]


def test_a_failed_block_leaves_the_old_version(tmp_path):
    _write(tmp_path / "final", OLD)
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "final") as staging:
            _write(staging, NEW)
            raise RuntimeError("writer failed")
    assert _contents(tmp_path / "final") == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
