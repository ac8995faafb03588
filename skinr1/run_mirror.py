"""A run whose run_dir is an object-store URI (s3://, gs://) works in a node-local mirror directory
and keeps the bucket authoritative for everything finished:

- a stage directory is pushed when the stage finishes, its `stage.json` marker last, and pulled
  before a stage looks for its marker, so a driver on a new node (or after a crash) reuses it;
- GRPO checkpoints are pushed with the commit-marker protocol of skinr1.storage and the newest
  committed one is pulled when a run resumes (only committed checkpoints are ever read);
- `checkpoints/` and Ray Train's `ray/` never travel as plain files.

Local run directories have no mirror: every function here is then a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from skinr1 import storage

log = logging.getLogger(__name__)

MARKER = "stage.json"
NOT_MIRRORED = ("checkpoints", "ray")
"""Subdirectories that are not copied as plain files (checkpoints have their own protocol)."""

_mirrors: dict[Path, storage.Location] = {}


def mirror_root(uri: str) -> Path:
    """The node-local directory a URI run works in (the same on every node with the same cache)."""
    base = Path(os.environ.get("SKINR1_CACHE", Path.home() / ".cache" / "skinr1"))
    return (base / "runs" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]).resolve()


def register(uri: str) -> Path:
    """Open the run URI (refusing what cannot be handled) and return its local mirror directory."""
    local = mirror_root(uri)
    if local not in _mirrors:
        _mirrors[local] = storage.location(uri)
    return local


def remote_for(path: str | Path) -> storage.Location | None:
    """Where `path` (inside a registered mirror) lives in the bucket; None for unmirrored paths."""
    path = Path(path)
    for local, remote in _mirrors.items():
        if path == local or local in path.parents:
            return remote.child(*path.relative_to(local).parts) if path != local else remote
    return None


def _mirrored(name: str) -> bool:
    return not any(part in NOT_MIRRORED for part in Path(name).parts[:-1])


def push_files(directory: Path, files: list[Path]) -> None:
    """Upload these files of `directory` to its place in the bucket, in order."""
    remote = remote_for(directory)
    if remote is None:
        return
    import pyarrow.fs as pafs

    for file in files:
        if file.is_file():
            pafs.copy_files(str(file), remote.child(*file.relative_to(directory).parts).path,
                            destination_filesystem=remote.filesystem)


def push_stage(directory: Path) -> None:
    """Upload a finished stage directory, its marker last (the marker commits it)."""
    if remote_for(directory) is None:
        return
    files = [p for p in sorted(directory.rglob("*")) if p.is_file() and _mirrored(str(p.relative_to(directory)))]
    push_files(directory, sorted(files, key=lambda p: p.name == MARKER))
    log.info("pushed %s to %s", directory, remote_for(directory).uri)


def clear_stage(directory: Path) -> None:
    """Delete a stage's copy in the bucket (a stage recomputed from scratch)."""
    remote = remote_for(directory)
    if remote is not None:
        storage.delete_directory(remote)


def pull_stage(directory: Path) -> None:
    """Download a stage directory from the bucket when the local copy lacks its marker (a new node,
    or a driver restarted elsewhere). Files already present with the same size are kept."""
    remote = remote_for(directory)
    if remote is None or (directory / MARKER).is_file():
        return
    import pyarrow.fs as pafs

    remote_files = {name: size for name, size in storage.list_files(remote).items() if _mirrored(name)}
    for name in sorted(remote_files, key=lambda n: n == MARKER):  # marker last: a torn pull is unfinished
        local = directory / name
        if local.is_file() and local.stat().st_size == remote_files[name]:
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(remote.child(name).path, str(local), source_filesystem=remote.filesystem)
    if remote_files:
        print(f"pulled {directory.name}/ from {remote.uri}")


def push_checkpoint(checkpoint: Path, step: int, keep: int) -> None:
    """Commit a local checkpoint to the bucket (marker last), then prune the bucket's old ones."""
    remote = remote_for(checkpoint.parent)
    if remote is None:
        return
    stored = storage.commit_checkpoint(checkpoint, remote, step)
    storage.prune_checkpoints(remote, keep)
    stage = checkpoint.parent.parent  # the curve so far goes with it, for a driver resumed elsewhere
    push_files(stage, [stage / "metrics.jsonl"])
    log.info("committed checkpoint step %d to %s", step, stored.location.uri)


def pull_latest_checkpoint(checkpoint_root: Path) -> None:
    """Bring the bucket's newest committed checkpoint into `checkpoint_root` when the local mirror
    has none as new (committed locally with the crash-safe protocol of skinr1.atomic)."""
    from skinr1.atomic import atomic_directory

    remote = remote_for(checkpoint_root)
    if remote is None:
        return
    latest = storage.latest_committed(remote)
    if latest is None:
        return
    local_steps = [int(p.name.split("-")[1]) for p in checkpoint_root.glob("step-*")
                   if p.name.split("-")[1].isdigit() and (p / "driver_state.json").is_file()]
    if local_steps and max(local_steps) >= latest.step:
        return
    with atomic_directory(checkpoint_root / f"step-{latest.step:06d}") as staging:
        storage.fetch_checkpoint(latest, staging)
    print(f"[rl] resuming from {latest.location.uri} (step {latest.step}), the newest committed checkpoint")
