"""Run directories on object storage (s3://, gs://) or a local/shared file system, through one
file-system layer: pyarrow.fs, the one Ray Train's `RunConfig(storage_path, storage_filesystem)` uses.

Object stores have no atomic rename, so a checkpoint is committed by a marker object written last:
`<root>/step-000010.<attempt>/COMMITTED`, a JSON manifest of every file and its size. Readers list
only checkpoints whose marker exists and whose files match the manifest; anything else (an upload a
crash cut short, a checkpoint being deleted) is ignored. Each upload goes to a fresh attempt prefix,
so re-committing a step never touches the committed copy until the new one is complete; deletion
removes the marker first. Credentials come from the standard variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS) or the node's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from skinr1.atomic import crash_point

SUPPORTED_SCHEMES = ("s3", "gs", "gcs", "file")
COMMIT_MARKER = "COMMITTED"
_STEP = re.compile(r"^step-(\d{6,})\.([0-9a-f]{12})$")


class UnsupportedStorageURI(ValueError):
    """A run_dir or model URI whose scheme no file-system layer here can read and write."""


def is_uri(location: str) -> bool:
    return "://" in location


def check_uri(location: str, key: str = "run_dir") -> None:
    """Refuse a URI this code cannot handle (naming the key), rather than treat it as a relative path."""
    if not is_uri(location):
        return
    scheme = location.split("://", 1)[0].lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedStorageURI(
            f"{key} {location!r}: the {scheme}:// scheme is not supported; use a local or shared path, "
            f"or one of {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}")


@dataclass(frozen=True)
class Location:
    """A directory on some file system: `filesystem` is a pyarrow FileSystem, `path` has no scheme."""

    filesystem: object
    path: str
    uri: str

    def child(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *parts])
        return Location(self.filesystem, path, "/".join([self.uri.rstrip("/"), *parts]))


def location(where: str | Path, key: str = "run_dir") -> Location:
    """The file system and path of a local directory or an s3:// / gs:// URI."""
    import pyarrow.fs as pafs

    text = str(where)
    check_uri(text, key)
    if not is_uri(text):
        path = str(Path(text).expanduser().resolve())
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except Exception as error:  # pyarrow reports missing credentials, bad buckets... as various types
        raise UnsupportedStorageURI(f"{key} {text!r} cannot be opened: {error}") from error
    return Location(filesystem, path.rstrip("/"), text.rstrip("/"))


# ------------------------------------------------------------------------------------ files
def upload_directory(local: str | Path, target: Location) -> dict[str, int]:
    """Copy every file under `local` to `target`; returns {relative path: size}."""
    import pyarrow.fs as pafs

    local = Path(local)
    files = {str(p.relative_to(local)): p.stat().st_size for p in sorted(local.rglob("*")) if p.is_file()}
    for name in files:
        pafs.copy_files(str(local / name), target.child(name).path, destination_filesystem=target.filesystem)
        crash_point()
    return files


def list_files(source: Location) -> dict[str, int]:
    """{relative path: size} of every file under `source` (empty when it does not exist)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(source.path, recursive=True, allow_not_found=True)
    prefix = source.path.rstrip("/") + "/"
    return {info.path[len(prefix):]: info.size for info in source.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File}


def download_directory(source: Location, local: str | Path) -> Path:
    """Copy every file under `source` into `local` (created)."""
    return download_files(source, list_files(source), local)


def download_files(source: Location, names, local: str | Path) -> Path:
    """Copy these files (relative paths) of `source` into `local` (created)."""
    import pyarrow.fs as pafs

    local = Path(local)
    local.mkdir(parents=True, exist_ok=True)
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(source.child(name).path, str(local / name), source_filesystem=source.filesystem)
    return local


def write_text(target: Location, text: str) -> None:
    with target.filesystem.open_output_stream(target.path) as stream:
        stream.write(text.encode())


def read_text(source: Location) -> str | None:
    import pyarrow.fs as pafs

    if source.filesystem.get_file_info(source.path).type != pafs.FileType.File:
        return None
    with source.filesystem.open_input_stream(source.path) as stream:
        return stream.read().decode()


def delete_directory(target: Location) -> None:
    import pyarrow.fs as pafs

    if target.filesystem.get_file_info(target.path).type != pafs.FileType.NotFound:
        target.filesystem.delete_dir(target.path)


# ------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class StoredCheckpoint:
    step: int
    location: Location
    committed_at: float
    files: dict[str, int]


def checkpoint_attempt(root: Location, step: int) -> Location:
    """A fresh staging prefix for step `step` under `root`: its writers upload their parts there."""
    return root.child(f"step-{step:06d}.{uuid.uuid4().hex[:12]}")


def finish_checkpoint(target: Location, step: int, files: dict[str, int]) -> StoredCheckpoint:
    """Commit the staging prefix `target` by writing its marker (the manifest `files`), but only
    when every file of the manifest is there with its size; else `IncompleteCheckpoint`."""
    from skinr1.checkpoint_parts import IncompleteCheckpoint, missing_files

    problems = missing_files(files, list_files(target))
    if problems:
        raise IncompleteCheckpoint(f"{target.uri} is not committed: " + "; ".join(problems[:5]))
    manifest = {"step": step, "committed_at": time.time(), "files": files}
    write_text(target.child(COMMIT_MARKER), json.dumps(manifest, indent=2))
    return StoredCheckpoint(step, target, manifest["committed_at"], files)


def commit_checkpoint(local: str | Path, root: Location, step: int) -> StoredCheckpoint:
    """Upload the complete checkpoint directory `local` as step `step` under `root`, marker last."""
    target = checkpoint_attempt(root, step)
    return finish_checkpoint(target, step, upload_directory(local, target))


def committed_manifest(checkpoint: Location) -> dict[str, int]:
    """The files of the committed checkpoint at `checkpoint` (from its marker); `FileNotFoundError`
    when it has no marker (an upload that never committed must not be read)."""
    marker = read_text(checkpoint.child(COMMIT_MARKER))
    if marker is None:
        raise FileNotFoundError(f"{checkpoint.uri} is not a committed checkpoint (no {COMMIT_MARKER})")
    return json.loads(marker)["files"]


def committed_checkpoints(root: Location) -> list[StoredCheckpoint]:
    """Complete checkpoints under `root`, oldest step first (for a step committed twice, the newer
    commit); half-written uploads and checkpoints being deleted are ignored."""
    import pyarrow.fs as pafs

    found: dict[int, StoredCheckpoint] = {}
    selector = pafs.FileSelector(root.path, recursive=False, allow_not_found=True)
    for info in root.filesystem.get_file_info(selector):
        match = _STEP.match(info.base_name)
        if info.type != pafs.FileType.Directory or not match:
            continue
        candidate = root.child(info.base_name)
        marker = read_text(candidate.child(COMMIT_MARKER))
        if marker is None:
            continue
        manifest = json.loads(marker)
        present = list_files(candidate)
        if any(present.get(name) != size for name, size in manifest["files"].items()):
            continue
        stored = StoredCheckpoint(int(match.group(1)), candidate, manifest["committed_at"], manifest["files"])
        previous = found.get(stored.step)
        if previous is None or stored.committed_at > previous.committed_at:
            found[stored.step] = stored
    return [found[step] for step in sorted(found)]


def latest_committed(root: Location) -> StoredCheckpoint | None:
    found = committed_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Location, keep: int) -> None:
    """Delete all but the newest `keep` committed steps, every superseded commit of a kept step,
    and uploads older than an hour that never committed. Markers go first."""
    import pyarrow.fs as pafs

    kept = {c.location.path for c in committed_checkpoints(root)[-keep:]} if keep > 0 else set()
    selector = pafs.FileSelector(root.path, recursive=False, allow_not_found=True)
    for info in root.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.Directory or not _STEP.match(info.base_name) or info.path in kept:
            continue
        candidate = root.child(info.base_name)
        marker = candidate.child(COMMIT_MARKER)
        if root.filesystem.get_file_info(marker.path).type == pafs.FileType.File:
            root.filesystem.delete_file(marker.path)
        elif info.mtime is not None and time.time() - info.mtime.timestamp() < 3600:
            continue  # perhaps another writer's upload in progress
        delete_directory(candidate)


def fetch_checkpoint(stored: StoredCheckpoint, local: str | Path, names=None) -> Path:
    """Download a committed checkpoint's files (`names`, default all of its manifest) and check
    them against the manifest."""
    names = sorted(stored.files) if names is None else list(names)
    local = download_files(stored.location, names, local)
    for name, size in ((n, stored.files[n]) for n in names):
        if (local / name).stat().st_size != size:
            raise OSError(f"{stored.location.uri}/{name}: downloaded {(local / name).stat().st_size} bytes, expected {size}")
    return local


# ---------------------------------------------------------------------------- model cache
def node_cache_base() -> Path:
    """This node's cache directory ($SKINR1_CACHE, default ~/.cache/skinr1): run mirrors, model
    copies and checkpoint staging live under it, never on another node."""
    return Path(os.environ.get("SKINR1_CACHE", Path.home() / ".cache" / "skinr1"))


def node_cache_root() -> Path:
    return node_cache_base() / "models"


def cached_model(uri: str) -> str:
    """A directory given as a URI (a model, or a finished stage's output such as the merged RL
    starting point), copied once per node into a local cache (keyed by the URI); a local path is
    returned as it is. Loaders on one node take turns under a file lock: the first makes the copy
    (committed atomically, so a crash leaves none), the others find it complete."""
    import fcntl

    from skinr1.atomic import atomic_directory, recover

    if not is_uri(uri):
        return uri
    source = location(uri, key="model")
    target = node_cache_root() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        recover(target.parent, target.name)
        if (target / ".complete").is_file():
            return str(target)
        if not list_files(source):
            raise FileNotFoundError(f"{uri} holds no files")
        with atomic_directory(target) as staging:
            download_directory(source, staging)
            (staging / ".complete").write_text(uri)
    return str(target)


def cached_source(path: str | Path) -> str | None:
    """The URI a `cached_model` copy at `path` was made from; None for any other path."""
    path = Path(path)
    marker = path / ".complete"
    return marker.read_text() if path.parent == node_cache_root() and marker.is_file() else None
