"""Metrics to a JSONL file (one object per step, easy to diff and plot) and to the configured
trackers (TensorBoard, W&B, MLflow: skinr1.trackers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from skinr1.trackers import TensorBoardTracker, Tracker, scalars


class MetricsLogger:
    """Appends `{"step": n, "time": t, ...}` lines to `jsonl_path`; scalars also go to TensorBoard
    (when `tensorboard_dir` is given) and to `trackers`.

    The JSONL file is opened in append mode and flushed per line, so a resumed run continues the
    same file and a crash loses at most the line being written. A run resumed from the checkpoint of
    step `resumed_at` first drops the rows after it (those steps run again; `drop_rows_after`).
    """

    def __init__(self, jsonl_path: str | Path, tensorboard_dir: str | Path | None = None,
                 trackers: Sequence[Tracker] = (), resumed_at: int | None = None):
        self.jsonl_path = Path(jsonl_path)
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None:
            drop_rows_after(self.jsonl_path, resumed_at)
        self._file = open(self.jsonl_path, "a", encoding="utf-8")
        self.trackers = list(trackers)
        if tensorboard_dir is not None:
            self.trackers.insert(0, TensorBoardTracker(Path(tensorboard_dir)))

    def log(self, step: int, values: dict[str, Any]) -> None:
        row = {"step": step, "time": time.time(), **values}
        self._file.write(json.dumps(row, default=_jsonable) + "\n")
        self._file.flush()
        numbers = dict(scalars(values))
        if numbers:
            for tracker in self.trackers:
                tracker.log_scalars(step, numbers)

    def close(self) -> None:
        self._file.close()
        for tracker in self.trackers:
            tracker.close()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics JSONL file (a torn last line from a crash is ignored)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def drop_rows_after(path: str | Path, step: int) -> int:
    """Keep only the rows of steps up to `step` (and no torn line) in a metrics JSONL file: a run
    resumed from the checkpoint of `step` logs the later steps again, and a line appended to a torn
    one would be lost with it. Rewritten atomically; returns how many lines went."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _whole_row_up_to(line, step)]
    if len(kept) == len(lines):
        return 0
    from skinr1.data.records import write_lines_atomic

    write_lines_atomic(path, [line.rstrip("\n") for line in kept])
    return len(lines) - len(kept)


def _whole_row_up_to(line: str, step: int) -> bool:
    try:
        return line.endswith("\n") and int(json.loads(line)["step"]) <= step
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
