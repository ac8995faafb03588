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
    import pyarrow.fs as pafs

    local = Path(local)
    for name in list_files(source):
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


def commit_checkpoint(local: str | Path, root: Location, step: int) -> StoredCheckpoint:
    """Upload the complete checkpoint directory `local` as step `step` under `root`, marker last."""
    target = root.child(f"step-{step:06d}.{uuid.uuid4().hex[:12]}")
    files = upload_directory(local, target)
    manifest = {"step": step, "committed_at": time.time(), "files": files}
    write_text(target.child(COMMIT_MARKER), json.dumps(manifest, indent=2))
    return StoredCheckpoint(step, target, manifest["committed_at"], files)


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


def fetch_checkpoint(stored: StoredCheckpoint, local: str | Path) -> Path:
    """Download a committed checkpoint (without its marker) and check it against the manifest."""
    local = download_directory(stored.location, local)
    (local / COMMIT_MARKER).unlink(missing_ok=True)
    for name, size in stored.files.items():
        if (local / name).stat().st_size != size:
            raise OSError(f"{stored.location.uri}/{name}: downloaded {(local / name).stat().st_size} bytes, expected {size}")
    return local


# ---------------------------------------------------------------------------- model cache
def node_cache_root() -> Path:
    return Path(os.environ.get("SKINR1_CACHE", Path.home() / ".cache" / "skinr1")) / "models"


def cached_model(uri: str) -> str:
    """A model directory given as a URI, copied once per node into a local cache (keyed by the URI);
    a local path is returned as it is. The copy is committed atomically, so concurrent loaders on
    one node either find it complete or make it."""
    from skinr1.atomic import atomic_directory, recover

    if not is_uri(uri):
        return uri
    source = location(uri, key="model")
    target = node_cache_root() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    recover(target.parent, target.name)
    if (target / ".complete").is_file():
        return str(target)
    with atomic_directory(target) as staging:
        download_directory(source, staging)
        (staging / ".complete").write_text(uri)
    return str(target)
