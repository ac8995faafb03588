"""Progress bars on the driver's screen for work that runs in Ray workers.

A worker's own bar would reach the screen through Ray's log relay as one line per update, prefixed
with the worker's name. Instead the driver follows the metrics JSONL file that rank 0 appends to
(one row per step, on the run directory every node shares) and draws one bar from it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable


def progress_enabled() -> bool:
    """Bars are on unless SKINR1_NO_PROGRESS=1 (logs, CI)."""
    return os.environ.get("SKINR1_NO_PROGRESS") != "1"


class FollowMetrics:
    """`with FollowMetrics(path, "sft"):` draws a bar of the rows' "step" out of "total_steps",
    with the last "loss", while the block runs. Rows already in the file count as done.

    `on_row` is called with every complete row as it appears (from the follower thread; the rows
    of a resumed run's file included), e.g. to send it to experiment trackers while training runs."""

    def __init__(self, path: str | Path, description: str, poll_s: float = 0.5,
                 on_row: Callable[[dict], None] | None = None):
        self.path, self.description, self.poll_s, self.on_row = Path(path), description, poll_s, on_row
        self._stop = threading.Event()
        self._offset = 0
        self._bar = None
        self._thread = threading.Thread(target=self._follow, name=f"follow-{description}", daemon=True)

    def __enter__(self) -> "FollowMetrics":
        if progress_enabled():
            from tqdm import tqdm

            self._bar = tqdm(desc=self.description, unit="step")
        if self._bar is not None or self.on_row is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._read()  # the last rows
        if self._bar is not None:
            self._bar.close()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete, _, _ = chunk.rpartition("\n")  # a row still being written waits for the next read
        if not complete:
            return
        self._offset += len(complete.encode("utf-8")) + 1
        for line in complete.splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.update(row)
            if self.on_row is not None:
                self.on_row(row)

    def update(self, row: dict) -> None:
        """Move the bar to a row's step (public so the bar logic is testable without a file)."""
        if self._bar is None:
            return
        if row.get("total_steps") and self._bar.total != row["total_steps"]:
            self._bar.total = row["total_steps"]
        if isinstance(row.get("step"), int):
            self._bar.n = row["step"]
        if isinstance(row.get("loss"), (int, float)):
            self._bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        self._bar.refresh()
