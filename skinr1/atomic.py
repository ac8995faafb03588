"""Crash-safe directory commits: a checkpoint or export is either complete at its final path, or the
previous version is (after `recover`), whatever instant the process dies at.

Protocol for committing `staging` as `X` (all within one filesystem, all renames `os.replace`):

1. Every file and directory in `staging` is fsynced (its content is on disk before its name is).
2. If `X` exists it is renamed to `.X.old` (a stale `.X.old` from an earlier commit goes first).
3. `staging` is renamed to `X`.
4. `.X.old` is deleted.

After each rename the parent directory is fsynced, so the renames reach the disk in order.
`recover(parent)` finishes or undoes an interrupted commit: `.X.old` with `X` missing (a crash
between 2 and 3) is renamed back to `X`; `.X.old` beside `X` (a crash in 4) and staging
directories (`.*.tmp`, a crash before 3) and retired directories (`.*.trash`) are deleted.

`SKINR1_CRASH_AT=k` makes the process `os._exit` at the k-th crash point it reaches (counted from
0 in each process): the crash tests run a commit in a subprocess for every k.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

CRASH_ENV = "SKINR1_CRASH_AT"
CRASH_EXIT_CODE = 86
STAGING_SUFFIX = ".tmp"
RETIRED_SUFFIX = ".old"
TRASH_SUFFIX = ".trash"

_crash_points_reached = 0


def crash_point() -> None:
    """Exit at once (no cleanup, no flush) when this is the crash point `SKINR1_CRASH_AT` names."""
    global _crash_points_reached
    target = os.environ.get(CRASH_ENV)
    if target is None:
        return
    if _crash_points_reached == int(target):
        os._exit(CRASH_EXIT_CODE)
    _crash_points_reached += 1


def fsync_directory(path: str | Path) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file, then every directory (deepest first) under `root`, `root` included."""
    root = Path(root)
    for current, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(current, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(current)


def remove_tree(path: str | Path) -> None:
    """Delete a directory tree, a crash point after each entry (deletion is not atomic either)."""
    path = Path(path)
    if not path.exists():
        return
    for current, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(current, name))
            crash_point()
        for name in dirs:
            target = os.path.join(current, name)
            if os.path.islink(target):
                os.unlink(target)
            else:
                os.rmdir(target)
    os.rmdir(path)


def retired_path(final: Path) -> Path:
    return final.parent / f".{final.name}{RETIRED_SUFFIX}"


def staging_path(final: Path) -> Path:
    """A fresh, empty staging directory beside `final` (on the same filesystem, so renames are atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=STAGING_SUFFIX))


def commit_directory(staging: Path, final: Path) -> Path:
    """Put the complete directory `staging` at `final`, replacing what was there (see the module doc)."""
    os.chmod(staging, 0o755)  # mkdtemp makes 0700 directories
    fsync_tree(staging)
    crash_point()
    parent = final.parent
    retired = retired_path(final)
    if final.exists():
        if retired.exists():  # left by an earlier commit's step 4: `final` is the newer one
            remove_tree(retired)
        os.replace(final, retired)
        fsync_directory(parent)
        crash_point()
    os.replace(staging, final)
    fsync_directory(parent)
    crash_point()
    if retired.exists():
        remove_tree(retired)
        fsync_directory(parent)
    return final


def retire_directory(path: Path) -> None:
    """Delete a committed directory so that a crash midway leaves no partial one under its name:
    it is renamed to a `.trash` name first (which `recover` deletes)."""
    trash = path.parent / f".{path.name}{TRASH_SUFFIX}"
    if trash.exists():
        remove_tree(trash)
    os.replace(path, trash)
    fsync_directory(path.parent)
    crash_point()
    remove_tree(trash)


def recover(parent: str | Path, name: str | None = None) -> list[str]:
    """Finish or undo interrupted commits in `parent` (only those of `name` when given); returns
    what it did, one line per entry, for logs."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    actions = []
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith("."):
            continue
        if entry.name.endswith(RETIRED_SUFFIX):
            final = parent / entry.name[1:-len(RETIRED_SUFFIX)]
            if name is not None and final.name != name:
                continue
            if final.exists():
                remove_tree(entry)
                actions.append(f"removed {entry.name} (superseded by {final.name})")
            else:
                os.replace(entry, final)
                actions.append(f"restored {final.name} from {entry.name}")
        elif entry.name.endswith(STAGING_SUFFIX) or entry.name.endswith(TRASH_SUFFIX):
            if name is not None and not entry.name.startswith(f".{name}."):
                continue
            remove_tree(entry) if entry.is_dir() else entry.unlink()
            actions.append(f"removed {entry.name} (unfinished)")
    if actions:
        fsync_directory(parent)
    return actions


@contextlib.contextmanager
def atomic_directory(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final_path` when the block exits without error."""
    final = Path(final_path)
    recover(final.parent, final.name)
    staging = staging_path(final)
    try:
        yield staging
        commit_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
