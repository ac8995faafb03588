"""Metrics to a JSONL file (one object per step, easy to diff and plot) and to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends `{"step": n, "time": t, ...}` lines to `jsonl_path`; scalars also go to TensorBoard.

    The JSONL file is opened in append mode and flushed per line, so a resumed run continues the
    same file and a crash loses at most the line being written.
    """

    def __init__(self, jsonl_path: str | Path, tensorboard_dir: str | Path | None = None):
        self.jsonl_path = Path(jsonl_path)
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.jsonl_path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, step: int, values: dict[str, Any]) -> None:
        row = {"step": step, "time": time.time(), **values}
        self._file.write(json.dumps(row, default=_jsonable) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in _scalars(values):
                self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

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


def _scalars(values: dict[str, Any], prefix: str = ""):
    """(name, number) of every finite number in `values`; a nested dict's numbers as "key/sub"."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield f"{prefix}{key}", value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
