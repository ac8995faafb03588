"""The machinery every manifest reader shares: the row -> Record helper, bad rows, value parsing.

A source format is declared as a `SourceFormat`: which columns it needs and a small function that
turns one raw row into `RowFields` (id, image name, label, skin type, split, extras). Everything
else (checking the header, resolving the label onto the taxonomy, joining the image path,
catching damaged rows) happens once, here, in `read_rows`; file parsing lives in `tables.py`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from skinr1.data.readers.tables import CELLS_KEY, ERROR_KEY, ManifestError, iter_rows, read_columns
from skinr1.data.records import DEFAULT_SPLIT, Record
from skinr1.taxonomy import SOURCES, LabelResolver, Resolution

# Spellings of "no value" seen in the datasets' numeric/metadata columns (PAD-UFES-20 writes
# 'UNK', Fitzpatrick17k -1). Labels are never filtered with this: 'UNK' is a real ISIC class
# that the label map declares unmapped, with a reason the report should show.
MISSING_VALUES = frozenset({"", "nan", "none", "null", "na", "n/a", "unk", "unknown", "-1", "-1.0"})


class RowError(ValueError):
    """One row is unusable; the reader reports it as a `BadRow` and goes on.

    `kind` is a short category for report counts ('missing_value', 'one_hot', ...); the message
    carries the specifics.
    """

    def __init__(self, message: str, kind: str = "invalid_row"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class BadRow:
    """A row that produced no record, with where it was and why."""

    line: int  # line number in the manifest file (1 = header for CSV)
    reason: str
    row: dict[str, Any] = field(default_factory=dict)
    kind: str = "invalid_row"  # short category for counts

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "reason": self.reason, "row": self.row}


@dataclass
class RowFields:
    """What a format function extracts from one raw row; `read_rows` turns it into a Record."""

    row_id: str
    image: str  # file name or path relative to the images directory (absolute paths are kept)
    label: str
    fitzpatrick_type: int | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Coarser labels to fall back on, in order, when `label` does not resolve (ISIC-archive
    # style diagnosis_3 -> diagnosis_2 -> diagnosis_1).
    fallback_labels: tuple[str, ...] = ()
    # Overrides the record's source (generic manifests that mix datasets).
    source: str | None = None
    resolve_source: str | None = None


@dataclass
class RowContext:
    """Per-row information a format function may need beyond the row itself."""

    index: int  # 0-based position among data rows
    options: Mapping[str, Any]
    setup: Mapping[str, Any]  # whatever the format's `setup` computed once for the file


RowFunction = Callable[[dict[str, str], RowContext], RowFields]
SetupFunction = Callable[[Path, Mapping[str, Any], Sequence[str]], dict[str, Any]]
# (line or position, raw row) pairs; rows carrying ERROR_KEY become bad rows.
RowIterator = Iterator[tuple[int, dict[str, Any]]]
# For inputs that are not a CSV/JSONL table (a folder per class, a JSON array, a headerless CSV):
# checks the input eagerly (raising ManifestError) and returns the iterator of raw rows.
RowSource = Callable[[Path, Mapping[str, Any]], RowIterator]


@dataclass(frozen=True)
class SourceFormat:
    """A manifest format: required columns (each entry lists accepted alternatives) and its row function."""

    name: str
    description: str
    required: tuple[tuple[str, ...], ...]
    row_fields: RowFunction
    setup: SetupFunction | None = None
    options: Mapping[str, str] = field(default_factory=dict)  # option name -> help text
    rows: RowSource | None = None  # replaces CSV/JSONL parsing (and the column check) when set


# --------------------------------------------------------------------------- value helpers
def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_VALUES


def is_blank(value: Any) -> bool:
    """Empty for label columns: only '', None and NaN (so 'UNK' or 'unknown' reach the resolver)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return str(value).strip().lower() in ("", "nan")


def first_label(row: Mapping[str, Any], *columns: str) -> str:
    """Value of the first of `columns` that is not blank, else ''."""
    for column in columns:
        value = text(row, column)
        if not is_blank(value):
            return value
    return ""


def text(row: Mapping[str, Any], column: str) -> str:
    """The stripped cell, or '' when the column is absent or the cell is empty."""
    value = row.get(column)
    return "" if value is None else str(value).strip()


def required_text(row: Mapping[str, Any], column: str) -> str:
    """The cell of a column the row cannot do without (an image id); RowError when missing."""
    value = text(row, column)
    if is_missing(value):
        raise RowError(f"empty {column}", "missing_value")
    return value


def first_column(row: Mapping[str, Any], *columns: str) -> str:
    """Value of the first of `columns` that is present and non-missing, else ''."""
    for column in columns:
        value = text(row, column)
        if not is_missing(value):
            return value
    return ""


def parse_fitzpatrick(value: Any) -> int | None:
    """'3', '3.0', 3 -> 3; missing or out-of-range values ('-1', '', 'UNK', '7') -> None."""
    if is_missing(value):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not number.is_integer() or not 1 <= number <= 6:
        return None
    return int(number)


def pick_extra(row: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Non-missing values of `columns` (kept as strings, as the dataset wrote them)."""
    return {c: text(row, c) for c in columns if c in row and not is_missing(text(row, c))}


# --------------------------------------------------------------------------- header check
def check_columns(path: Path, columns: Sequence[str], required: Sequence[Sequence[str]], source: str) -> None:
    """Raise `ManifestError` naming every required column (or set of alternatives) that is absent."""
    present = set(columns)
    missing = [" or ".join(alternatives) for alternatives in required if not present & set(alternatives)]
    if missing:
        raise ManifestError(
            f"{path}: not a {source} manifest: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(columns[:15]) or 'none'}"
        )


# --------------------------------------------------------------------------- row -> Record
class LabelCache:
    """Memoised `resolver.resolve`: datasets repeat a few hundred labels over thousands of rows."""

    def __init__(self, resolver: LabelResolver):
        self.resolver = resolver
        self._cache: dict[tuple[str, str | None], Resolution] = {}

    def resolve(self, label: str, source: str | None) -> Resolution:
        key = (label, source)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self.resolver.resolve(label, source=source)
        return hit


def build_record(fields_: RowFields, source: str, images_dir: Path, labels: LabelCache, default_split: str) -> Record:
    """The one place a row becomes a Record: label resolution, depth, image path, split.

    Labels are resolved in the vocabulary of `source` when it is one of the taxonomy's dataset
    sources, as free text otherwise ('generic', 'synthetic'); a row may override both.
    """
    if fields_.source is not None:
        resolve_source = fields_.resolve_source
    else:
        resolve_source = source if source in SOURCES else None
    if not fields_.row_id:
        raise RowError("empty record id", "missing_value")
    if not fields_.image:
        raise RowError("empty image name", "missing_value")
    resolution = labels.resolve(fields_.label, resolve_source)
    original = fields_.label
    extra = dict(fields_.extra)
    if not resolution.mapped:
        for fallback in fields_.fallback_labels:
            alternative = labels.resolve(fallback, resolve_source)
            if alternative.mapped:
                extra["label_fallback"] = {"from": original, "to": fallback}
                resolution, original = alternative, fallback
                break
    if not resolution.mapped:
        extra["unmapped_reason"] = resolution.reason or "unmapped"
    node_id = resolution.node_id
    image = fields_.image if os.path.isabs(fields_.image) else os.path.join(images_dir, fields_.image)
    record_source = fields_.source or source
    # Ids that already carry the source prefix (re-read SkinR1 manifests) are not prefixed twice.
    prefix = f"{record_source}:"
    record_id = fields_.row_id if fields_.row_id.startswith(prefix) else prefix + fields_.row_id
    return Record(
        record_id=record_id,
        image=image,
        node_id=node_id,
        label_depth=labels.resolver.taxonomy.depth(node_id) if node_id else None,
        source=record_source,
        original_label=original,
        fitzpatrick_type=fields_.fitzpatrick_type,
        split=fields_.split or default_split,
        extra=extra,
    )


def read_rows(
    fmt: SourceFormat,
    manifest: str | Path,
    images_dir: str | Path | None,
    resolver: LabelResolver,
    options: Mapping[str, Any] | None = None,
) -> Iterator[Record | BadRow]:
    """Yield one Record (mapped or not) or one BadRow per data row of `manifest` (see `read_numbered_rows`)."""
    return (item for _, item in read_numbered_rows(fmt, manifest, images_dir, resolver, options))


def read_numbered_rows(
    fmt: SourceFormat,
    manifest: str | Path,
    images_dir: str | Path | None,
    resolver: LabelResolver,
    options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, Record | BadRow]]:
    """Yield (line number, Record or BadRow) per data row of `manifest`.

    Whole-file problems (missing file, wrong columns, bad options) raise `ManifestError` right
    away, before iteration; any exception while handling a single row becomes a BadRow so one
    damaged line never stops a run. `images_dir` defaults to the manifest's folder (or to the
    manifest itself when a folder-per-class format is given a folder).
    """
    path = Path(manifest)
    if not (path.exists() if fmt.rows is not None else path.is_file()):
        raise ManifestError(f"manifest not found: {path}")
    options = dict(options or {})
    unknown = set(options) - set(fmt.options) - {"split"}
    if unknown:
        raise ManifestError(f"{fmt.name}: unknown reader option(s) {sorted(unknown)}; known: {sorted(fmt.options)}")
    if fmt.rows is not None:
        rows, columns = fmt.rows(path, options), []
    else:
        columns = read_columns(path)
        check_columns(path, columns, fmt.required, fmt.name)
        rows = iter_rows(path)
    setup = fmt.setup(path, options, columns) if fmt.setup else {}
    images = Path(images_dir) if images_dir is not None else (path if path.is_dir() else path.parent)
    return _generate(fmt, rows, images, LabelCache(resolver), options, setup)


def _generate(
    fmt: SourceFormat, rows: RowIterator, images: Path, labels: LabelCache, options: dict[str, Any], setup: dict[str, Any]
) -> Iterator[tuple[int, Record | BadRow]]:
    default_split = str(options.get("split") or DEFAULT_SPLIT)
    for index, (line, row) in enumerate(rows):
        if ERROR_KEY in row:
            yield line, BadRow(line, row[ERROR_KEY], {"cells": row.get(CELLS_KEY, [])}, kind="malformed_row")
            continue
        try:
            fields_ = fmt.row_fields(row, RowContext(index=index, options=options, setup=setup))
            item: Record | BadRow = build_record(fields_, fmt.name, images, labels, default_split)
        except RowError as error:
            item = BadRow(line, str(error), _short_row(row), kind=error.kind)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            # A bug or a shape no format function anticipated: still one bad row, not a crash.
            item = BadRow(line, f"{type(error).__name__}: {error}", _short_row(row), kind=type(error).__name__)
        yield line, item


def _short_row(row: Mapping[str, Any], limit: int = 12) -> dict[str, Any]:
    """The first few cells of a row, for reports (whole rows can be long URLs and notes)."""
    return {k: (v if not isinstance(v, str) or len(v) <= 120 else v[:117] + "...") for k, v in list(row.items())[:limit]}
