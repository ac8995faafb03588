"""Manifest readers: one `SourceFormat` per dataset, all driven by `base.read_rows`.

    from skinr1.data.readers import read_manifest
    for item in read_manifest("ham10000", "HAM10000_metadata.csv", "images/"):
        ...  # a Record (mapped or not) or a BadRow

Formats and their real layouts are documented in `isic.py`, `clinical.py`, `challenges.py`
(ISIC 2018/2020, ISBI 2016, Derm12345), `folders.py` (folder per class: DermNet, MSLD) and
`omnimedvqa.py` (QA JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from skinr1.data.readers.base import BadRow, ManifestError, RowError, RowFields, SourceFormat, read_numbered_rows, read_rows
from skinr1.data.readers.challenges import DERM12345, ISBI2016, ISIC2018, ISIC2020
from skinr1.data.readers.clinical import DDI, DERM7PT, FITZPATRICK17K, PAD_UFES_20
from skinr1.data.readers.folders import DERMNET, MSLD
from skinr1.data.readers.generic import GENERIC, GENERIC_SOURCE
from skinr1.data.readers.isic import BCN20000, HAM10000, ISIC2019
from skinr1.data.readers.omnimedvqa import OMNIMEDVQA
from skinr1.data.records import Record
from skinr1.taxonomy import LabelResolver, canonical_source

FORMATS: dict[str, SourceFormat] = {
    fmt.name: fmt
    for fmt in (
        FITZPATRICK17K, HAM10000, ISIC2019, BCN20000, PAD_UFES_20, DDI, DERM7PT,
        DERM12345, DERMNET, ISIC2018, ISIC2020, ISBI2016, MSLD, OMNIMEDVQA, GENERIC,
    )
}

__all__ = [
    "FORMATS",
    "GENERIC_SOURCE",
    "BadRow",
    "ManifestError",
    "RowError",
    "RowFields",
    "SourceFormat",
    "format_for",
    "read_manifest",
    "read_numbered_manifest",
]


def format_for(source: str) -> SourceFormat:
    """The format for a source name in any spelling ('PAD-UFES-20', 'isic_2019', 'generic')."""
    if source.strip().lower() == GENERIC_SOURCE:
        return GENERIC
    try:
        return FORMATS[canonical_source(source)]
    except ValueError:
        raise ManifestError(f"unknown source {source!r}; expected one of {', '.join(FORMATS)}") from None


def read_manifest(
    source: str,
    manifest: str | Path,
    images_dir: str | Path | None = None,
    resolver: LabelResolver | None = None,
    options: Mapping[str, Any] | None = None,
) -> Iterator[Record | BadRow]:
    """Read `manifest` in the format of `source`; see `base.read_rows` for what is yielded."""
    return (item for _, item in read_numbered_manifest(source, manifest, images_dir, resolver, options))


def read_numbered_manifest(
    source: str,
    manifest: str | Path,
    images_dir: str | Path | None = None,
    resolver: LabelResolver | None = None,
    options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, Record | BadRow]]:
    """`read_manifest` with each item's line number (position, for folder formats)."""
    if resolver is None:
        from skinr1.taxonomy import default_resolver

        resolver = default_resolver()
    return read_numbered_rows(format_for(source), manifest, images_dir, resolver, options)
