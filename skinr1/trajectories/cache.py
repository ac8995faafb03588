"""On-disk cache of teacher responses: one JSON file per request hash, written atomically.

The key hashes everything that determines the response (model, messages including the image
bytes, sampling parameters), so a re-run with the same inputs issues no requests, and changing
anything (a passage, the temperature) misses the cache instead of returning a stale answer.
Files rather than one database: Ray tasks on several processes (or hosts sharing a file system)
write concurrently without locking, and `os.replace` makes each write all-or-nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from skinr1.data.records import write_text_atomic


def request_key(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        # Two-level fan-out keeps directories small for sets of 10^5 requests.
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry, or None (a missing or unreadable file is a miss, never an error)."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        write_text_atomic(self.path(key), json.dumps({**entry, "key": key}, ensure_ascii=False))

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json")) if self.directory.exists() else 0
