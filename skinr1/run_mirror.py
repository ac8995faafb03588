"""A run whose run_dir is an object-store URI (s3://, gs://) works in a node-local mirror directory
and keeps the bucket authoritative for everything finished:

- a stage directory is pushed when the stage finishes, its `stage.json` marker last, and pulled
  before a stage looks for its marker, so a driver on a new node (or after a crash) reuses it;
- GRPO checkpoints are pushed with the commit-marker protocol of skinr1.storage and the newest
  committed one is pulled when a run resumes (only committed checkpoints are ever read); learner
  ranks upload and download their own parts on their own nodes (skinr1.checkpoint_parts);
- `checkpoints/` and Ray Train's `ray/` never travel as plain files;
- what actors on other nodes read from the run goes to them by its bucket URI (`shipped`: each
  node copies it once into its own cache) or, for images, as bytes (`shipped_image`): the mirror
  is the driver's alone.

Local run directories have no mirror: every function here is then a no-op.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from skinr1 import storage

log = logging.getLogger(__name__)

MARKER = "stage.json"
NOT_MIRRORED = ("checkpoints", "ray")
"""Subdirectories that are not copied as plain files (checkpoints have their own protocol)."""

_mirrors: dict[Path, storage.Location] = {}


def mirror_root(uri: str) -> Path:
    """The node-local directory a URI run works in (the same on every node with the same cache)."""
    return (storage.node_cache_base() / "runs" / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]).resolve()


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


def shipped(path: str | Path) -> str:
    """How an actor that may run on another node names `path`: its bucket URI when it lies in a
    mirror or is this node's copy of a URI (the actor copies it with `storage.cached_model`),
    else the path itself (a shared or node-identical path, or a hub id)."""
    text = str(path)
    if not text.startswith("/"):
        return text
    remote = remote_for(text)
    if remote is not None:
        return remote.uri
    return storage.cached_source(text) or text  # this node's copy of a model URI: the URI


def relocate(path: str, root: Path) -> str:
    """`path` inside another node's mirror of the run mirrored at `root` (`<cache>/runs/<hash>/...`,
    the hash being `root`'s name: the same on every node) as the same file under `root`; any other
    path as it is. A driver on a new node reads manifests the first driver wrote, naming its files."""
    parts = Path(path).parts
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == root.name and parts[index - 1] == "runs":
            return str(root.joinpath(*parts[index + 1:]))
    return path


def local_path(path: str) -> str:
    """`path`, moved into this node's mirror when it names a file of another node's mirror of a
    registered run (`relocate`)."""
    for root in _mirrors:
        moved = relocate(path, root)
        if moved != path:
            return moved
    return path


def shipped_image(path: str) -> str | bytes:
    """An image as requests to rollout actors and learner ranks carry it: the file's bytes when it
    lies in a mirror (a data set the run generated, e.g. the synthetic one), else its path."""
    return Path(path).read_bytes() if remote_for(path) is not None else path


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
    push_curve(checkpoint.parent)
    stored = storage.commit_checkpoint(checkpoint, remote, step)
    after_commit(checkpoint.parent, stored, keep)


def push_curve(checkpoint_root: Path) -> None:
    """Push the stage's metrics so far, before the marker commits their step: a driver resumed
    elsewhere from that checkpoint finds the curve up to it (rows past it are dropped on resume)."""
    stage = checkpoint_root.parent
    push_files(stage, [stage / "metrics.jsonl"])


def after_commit(checkpoint_root: Path, stored: storage.StoredCheckpoint, keep: int) -> None:
    """Prune the bucket's old checkpoints once a new one is committed."""
    storage.prune_checkpoints(remote_for(checkpoint_root), keep)
    log.info("committed checkpoint step %d to %s", stored.step, stored.location.uri)


def pull_latest_checkpoint(checkpoint_root: Path) -> None:
    """Bring the driver's part (skinr1.checkpoint_parts.driver_reads) of the bucket's newest
    committed checkpoint into `checkpoint_root` when the local mirror has none as new (committed
    locally with the crash-safe protocol of skinr1.atomic); learner ranks fetch their own part."""
    from skinr1.atomic import atomic_directory
    from skinr1.checkpoint_parts import driver_reads

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
        storage.fetch_checkpoint(latest, staging, driver_reads(latest.files))
    log.info("fetched the driver's part of %s (step %d), the newest committed checkpoint", latest.location.uri, latest.step)


def committed_source(checkpoint: Path) -> str | None:
    """The bucket URI of the committed checkpoint a mirror's `checkpoint` directory stands for
    (learner ranks download their part from it); None outside a mirror."""
    remote = remote_for(checkpoint.parent)
    if remote is None:
        return None
    step = int(checkpoint.name.split("-")[1])
    found = [c for c in storage.committed_checkpoints(remote) if c.step == step]
    if not found:
        raise FileNotFoundError(f"{checkpoint} has no committed copy under {remote.uri}: the bucket, not "
                                "the mirror, holds a bucket run's checkpoints")
    return found[-1].location.uri


def local_records(manifest):
    """A manifest's records, their images on this node: a driver resuming a bucket run on a new
    node reads manifests that name the first driver's mirror (`local_path`)."""
    from skinr1.data.records import read_jsonl

    return [replace(r, image=local_path(r.image)) for r in read_jsonl(manifest)]
