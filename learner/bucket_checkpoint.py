"""A learner rank's part of a GRPO checkpoint when the run directory is a bucket.

No node sees another's disk: the rank writes its part into a staging directory on its own node
(under $SKINR1_CACHE) and uploads it to the checkpoint's staging prefix, reporting {file: size} to
the driver, which commits the checkpoint once every part is there (skinr1.pipeline.rl_checkpoint).
On resume the rank downloads what it reads (skinr1.checkpoint_parts.rank_reads) of the committed
checkpoint to its own node. A target that is a local path is written and read in place.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from skinr1 import storage

STAGING_DIR = "checkpoint-staging"
STALE_AFTER_S = 24 * 3600
"""A staging directory untouched this long was left by a rank that died while saving or loading
(a live one finishes in minutes); the next rank on the node deletes it."""


def _node_staging(kind: str) -> Path:
    root = storage.node_cache_base() / STAGING_DIR
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if time.time() - entry.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{kind}-"))


def save_part(target: str, write: Callable[[Path], None]) -> dict[str, int] | None:
    """`write(directory)` this rank's files; for a bucket `target` they are uploaded there and
    their {relative path: size} returned (None for a local target)."""
    if not storage.is_uri(target):
        write(Path(target))
        return None
    local = _node_staging("save")
    try:
        write(local)
        return storage.upload_directory(local, storage.location(target, key="checkpoint"))
    finally:
        shutil.rmtree(local, ignore_errors=True)


def load_part(source: str, read: Callable[[Path], None]) -> None:
    """`read(directory)` a checkpoint: in place for a local `source`; for a committed checkpoint in
    a bucket, this rank's files downloaded (and checked against the manifest) to this node first."""
    from skinr1.checkpoint_parts import rank_reads

    if not storage.is_uri(source):
        read(Path(source))
        return
    location = storage.location(source, key="checkpoint")
    committed = storage.StoredCheckpoint(0, location, 0.0, storage.committed_manifest(location))
    local = _node_staging("load")
    try:
        read(storage.fetch_checkpoint(committed, local, rank_reads(committed.files)))
    finally:
        shutil.rmtree(local, ignore_errors=True)
