"""Generic manifests: a CSV/TSV or JSON Lines file with `image` and `label` per row.

Optional columns: `record_id` (default: the image path), `source` (a dataset name: the label is
then resolved in that dataset's vocabulary; anything else is kept as the record's source and the
label is resolved as free text), `fitzpatrick_type` (1-6), `split`. Every other column goes to
`extra`. Labels may be any taxonomy name, synonym or node id. A SkinR1 manifest (Record JSONL)
is accepted too: its `node_id` (else `original_label`) is the label and its `extra` is kept.
"""

from __future__ import annotations

from skinr1.data.readers.base import (
    RowContext,
    RowError,
    RowFields,
    SourceFormat,
    first_label,
    is_missing,
    parse_fitzpatrick,
    text,
)
from skinr1.taxonomy import canonical_source

GENERIC_SOURCE = "generic"
LABEL_COLUMNS = ("label", "node_id", "original_label")
_KNOWN = ("image", "record_id", "source", "fitzpatrick_type", "split", "label_depth", "extra", *LABEL_COLUMNS)


def _source_names(value: str) -> tuple[str, str | None]:
    """(record source, vocabulary to resolve in): canonical dataset names resolve in their map."""
    if not value:
        return GENERIC_SOURCE, None
    try:
        canonical = canonical_source(value)
    except ValueError:
        return value, None  # e.g. 'synthetic' or an in-house set: free-text resolution
    return canonical, canonical


def generic_row(row: dict, ctx: RowContext) -> RowFields:
    image = text(row, "image")
    if not image:
        raise RowError("empty image", "missing_value")
    source, vocabulary = _source_names(text(row, "source"))
    fitzpatrick_raw = row.get("fitzpatrick_type")
    fitzpatrick = parse_fitzpatrick(fitzpatrick_raw)
    if fitzpatrick is None and not is_missing(fitzpatrick_raw):
        raise RowError(f"fitzpatrick_type {fitzpatrick_raw!r} is not 1-6", "invalid_value")
    extra = dict(row["extra"]) if isinstance(row.get("extra"), dict) else {}
    extra.update({k: v for k, v in row.items() if k not in _KNOWN and not is_missing(v)})
    return RowFields(
        row_id=text(row, "record_id") or image,
        image=image,
        label=first_label(row, *LABEL_COLUMNS),
        fitzpatrick_type=fitzpatrick,
        split=text(row, "split") or None,
        extra=extra,
        source=source,
        resolve_source=vocabulary,
    )


GENERIC = SourceFormat(
    name=GENERIC_SOURCE,
    description="CSV/TSV/JSONL with image, label[, record_id, source, fitzpatrick_type, split]",
    required=(("image",), LABEL_COLUMNS),
    row_fields=generic_row,
)
