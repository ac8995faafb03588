"""`Record`: one labelled image, the unit every SkinR1 package (trajectories, RL, eval) reads.

Manifests are JSON Lines files with one `Record.to_dict()` per line. They are written atomically
(temporary file in the same directory, then `os.replace`) so that a crashed or concurrent writer
never leaves a half-written manifest behind for a training job to pick up.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

# Split name used when a source dataset ships no official split.
DEFAULT_SPLIT = "all"
# Deepest nesting a JSON Lines line may have. Manifests and reward inputs are a few levels deep;
# a far deeper line is malformed, and would exhaust the recursion limit wherever it is re-encoded.
MAX_JSON_DEPTH = 64


class JsonLineError(ValueError):
    """One line of a JSON Lines file that cannot be used: invalid JSON or nested too deeply."""


def parse_json_line(line: str) -> Any:
    """`json.loads` for one line of untrusted input; `JsonLineError` for anything unusable."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise JsonLineError(f"invalid JSON: {error.msg}") from None
    except RecursionError:
        raise JsonLineError(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as error:  # e.g. an integer literal longer than Python's digit limit
        raise JsonLineError(f"invalid JSON: {error}") from None
    # Only a line with many brackets can be deep: the cheap count spares normal lines the walk.
    if line.count("[") + line.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise JsonLineError(f"invalid JSON: nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@dataclass
class Record:
    """One image with its (possibly coarse, possibly missing) taxonomy label."""

    record_id: str
    """Stable id, unique within a manifest: '<source>:<id from the dataset>'."""
    image: str
    """Path of the image file (absolute, or as given on the command line)."""
    node_id: str | None
    """Deepest taxonomy node that is true for the image; None when the label did not map."""
    label_depth: int | None
    """Depth of `node_id` (1 = top-level category, 2 = group, ...); None when unmapped."""
    source: str
    """Canonical dataset name (see `skinr1.taxonomy.SOURCES`), or e.g. 'synthetic' / 'generic'."""
    original_label: str
    """The label exactly as the dataset spells it (before normalisation or mapping)."""
    fitzpatrick_type: int | None = None
    """Fitzpatrick skin type 1-6 when the dataset records one, else None."""
    split: str = DEFAULT_SPLIT
    """Official split of the source ('train', 'test', ...) or 'all' when it has none."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific fields worth keeping (lesion id, age, partition labels, ...)."""

    def __post_init__(self) -> None:
        # Catch wrong skin types at construction so that no manifest ever stores one.
        if self.fitzpatrick_type is not None and not 1 <= int(self.fitzpatrick_type) <= 6:
            raise ValueError(f"record {self.record_id!r}: fitzpatrick_type {self.fitzpatrick_type!r} not in 1-6")

    @property
    def mapped(self) -> bool:
        return self.node_id is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        """Build a Record from `to_dict()` output; unknown keys are an error, missing optional keys default."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Record field(s): {sorted(unknown)}")
        values = dict(data)
        values["extra"] = dict(values.get("extra") or {})
        return cls(**values)


def read_jsonl(path: str | Path) -> list[Record]:
    """Read a manifest; blank lines are skipped, a malformed line raises with its line number."""
    records: list[Record] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(Record.from_dict(parse_json_line(line)))
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a valid Record: {error}") from error
    return records


def write_jsonl(path: str | Path, records: Iterable[Record | dict[str, Any]]) -> int:
    """Write records (or plain dicts) as JSON Lines atomically; returns the number written."""
    rows = (r.to_dict() if isinstance(r, Record) else r for r in records)
    return write_lines_atomic(path, (json.dumps(row, ensure_ascii=False) for row in rows))


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> int:
    """Write text lines to `path` via a temporary file in the same directory and `os.replace`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                handle.write("\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; manifests are shared between users and jobs.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        # Never leave the temporary file behind, whatever went wrong.
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    return count


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a whole text file atomically (reports, READMEs)."""
    write_lines_atomic(path, [text.rstrip("\n")])
