"""Row iteration over CSV/TSV and JSON Lines manifests, tolerant of damaged lines.

A damaged line (wrong number of fields, invalid JSON) is yielded as a row holding an `__error__`
key instead of raising, so the reader can report it as a bad row and carry on.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator

from skinr1.data.records import JsonLineError, parse_json_line


class ManifestError(ValueError):
    """The manifest as a whole is unusable (missing file, wrong columns): nothing can be read."""

ERROR_KEY = "__error__"
CELLS_KEY = "__cells__"
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in JSONL_SUFFIXES


def _open_csv(path: Path):
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename column 1.
    # errors="replace": a stray Latin-1 byte spoils one label (reported unmapped), not the file.
    handle = open(path, encoding="utf-8-sig", errors="replace", newline="")
    return handle, csv.reader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")


def read_columns(path: Path) -> list[str]:
    """Header of a CSV/TSV; for JSON Lines the keys of the first object (JSONL has no header)."""
    if _is_jsonl(path):
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    try:
                        first = parse_json_line(line)
                    except JsonLineError:
                        return []
                    return list(first) if isinstance(first, dict) else []
        return []
    handle, reader = _open_csv(path)
    with handle:
        try:
            return [cell.strip() for cell in next(reader)]
        except StopIteration:
            raise ManifestError(f"{path}: empty manifest (no header row)") from None
        except csv.Error as error:
            raise ManifestError(f"{path}: unreadable CSV header: {error}") from None


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank data row; damaged rows carry `ERROR_KEY`."""
    return _iter_jsonl(path) if _is_jsonl(path) else _iter_csv(path)


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    handle, reader = _open_csv(path)
    with handle:
        try:
            header = [cell.strip() for cell in next(reader)]
        except StopIteration:
            return
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield reader.line_num, {ERROR_KEY: f"malformed CSV: {error}"}
                continue
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            if len(cells) != len(header):
                yield reader.line_num, {
                    ERROR_KEY: f"row has {len(cells)} fields but the header has {len(header)}",
                    CELLS_KEY: cells[:20],
                }
                continue
            yield reader.line_num, dict(zip(header, cells))


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = parse_json_line(line)
            except JsonLineError as error:
                yield number, {ERROR_KEY: str(error)}
                continue
            if not isinstance(value, dict):
                yield number, {ERROR_KEY: f"expected a JSON object, got {type(value).__name__}"}
                continue
            yield number, value
