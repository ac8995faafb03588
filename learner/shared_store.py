"""Versioned policy files in a node's shared memory (`/dev/shm`), for the `shared_memory` sync.

The learner writes each policy version once into RAM-backed files; rollout actors on the same node
read them in place, so a sync moves a path, not the payload. A version appears atomically (written
under a staging name, then renamed) and only the newest `keep` versions stay: an actor may still be
loading the previous one when the next is published.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from rollout.weight_update import SHARED_MEMORY as SHARED_MEMORY_ROOT
from rollout.weight_update import shared_memory_available

KEEP_VERSIONS = 2


def store_name(run_key: str) -> str:
    """A directory name per run: a resumed run reuses (and clears) its predecessor's files."""
    return "skinr1-sync-" + hashlib.sha1(run_key.encode()).hexdigest()[:12]


def require_shared_memory(root: Path = SHARED_MEMORY_ROOT) -> None:
    if not shared_memory_available(root):
        raise RuntimeError(
            f"rl.sync_backend=shared_memory needs a writable {root} (Linux shared memory) on the learner's node; "
            "use rl.sync_backend=object_store here"
        )


class SharedVersionStore:
    """`<root>/<name>/v<version>/`: one directory of files per published policy version."""

    def __init__(self, name: str, root: Path = SHARED_MEMORY_ROOT, keep: int = KEEP_VERSIONS):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        require_shared_memory(root)
        self.directory = root / name
        self.keep = keep
        self.clear()  # files a killed run left behind would shadow this run's versions

    def publish(self, version: int, write: Callable[[Path], Any]) -> Path:
        """Let `write(staging_dir)` fill a version's files, then make them visible at once."""
        final = self.directory / f"v{version}"
        staging = self.directory / f".v{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        self._prune()
        return final

    def versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in self.directory.glob("v*") if p.name[1:].isdigit())

    def _prune(self) -> None:
        for old in self.versions()[: -self.keep]:
            shutil.rmtree(self.directory / f"v{old}", ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
