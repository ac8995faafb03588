"""Who writes and who reads which files of a GRPO checkpoint committed to a bucket (pure logic).

Without a shared file system every learner rank writes its part on its own node and uploads it to
the checkpoint's staging prefix; the driver adds `driver_state.json` and commits the checkpoint
(writes the marker) only once every part is there with the size its writer reported. On resume a
rank downloads what it reads (the engine state) and the driver what it reads (the rest).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

ENGINE_DIR = "engine"
"""Every learner rank's training-engine state; DeepSpeed's loader reads every rank's optimizer
shard (not only its own), so each rank needs the whole directory."""


class IncompleteCheckpoint(RuntimeError):
    """A checkpoint's parts are missing, torn or contradict each other: it must not be committed."""


def merge_parts(parts: Sequence[Mapping[str, int] | None], writers: int) -> dict[str, int]:
    """One manifest ({relative path: size}) from the parts of `writers` writers (learner ranks and
    the driver). A writer that reported nothing (None), a missing writer, or a file two writers
    report with different sizes makes the checkpoint incomplete."""
    if len(parts) != writers:
        raise IncompleteCheckpoint(f"{len(parts)} of {writers} checkpoint parts reported")
    merged: dict[str, int] = {}
    for index, part in enumerate(parts):
        if part is None:
            raise IncompleteCheckpoint(f"checkpoint part {index} reported no files")
        for name, size in part.items():
            if name in merged and merged[name] != size:
                raise IncompleteCheckpoint(f"{name}: two writers report {merged[name]} and {size} bytes")
            merged[name] = size
    return merged


def missing_files(expected: Mapping[str, int], present: Mapping[str, int]) -> list[str]:
    """The expected files that are absent or of another size at the staging prefix, each with what
    is wrong; a checkpoint is committed only when this is empty."""
    problems = []
    for name, size in sorted(expected.items()):
        found = present.get(name)
        if found is None:
            problems.append(f"{name} is missing")
        elif found != size:
            problems.append(f"{name} has {found} bytes, its writer reported {size}")
    return problems


def rank_reads(files: Iterable[str]) -> list[str]:
    """The files of a committed checkpoint a learner rank downloads to resume."""
    return sorted(name for name in files if name.split("/", 1)[0] == ENGINE_DIR)


def driver_reads(files: Iterable[str]) -> list[str]:
    """The files the driver downloads: its state and the policy (for `final/`), not the engine."""
    return sorted(name for name in files if name.split("/", 1)[0] != ENGINE_DIR)
