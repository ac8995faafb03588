"""Clinical-photo datasets (and Derm7pt, which pairs clinical and dermoscopic images).

Formats (as downloaded):

* Fitzpatrick17k fitzpatrick17k.csv: md5hash, fitzpatrick_scale, fitzpatrick_centaur, label,
  nine_partition_label, three_partition_label, qc, url, url_alphanum; image `<md5hash>.jpg`;
  fitzpatrick_scale -1 = unknown. The partition columns are the dataset's own coarse labels
  and are kept as `extra.source_path` so `prepare` can check them against the taxonomy path.
* PAD-UFES-20 metadata.csv: patient_id, lesion_id, ..., fitspatrick [sic], ..., diagnostic
  (ACK, BCC, MEL, NEV, SCC, SEK), ..., img_id (file name incl. .png), biopsed.
* DDI ddi_metadata.csv: (unnamed index), DDI_ID, DDI_file, skin_tone (12 / 34 / 56), malignant,
  disease. Skin tone is a pair of Fitzpatrick types; we store the LOWER type of the pair
  (12 -> 1, 34 -> 3, 56 -> 5) and keep the pair in `extra.skin_tone_group` ("I-II", ...), so
  type-based analyses should bin DDI records by pair, not by exact type.
* Derm7pt meta.csv: case_num, diagnosis, seven_point_score, ..., clinic, derm, notes; `clinic`
  and `derm` are image paths relative to the images folder. Option `image_column` picks one
  (default derm). The release's train_indexes.csv / valid_indexes.csv / test_indexes.csv, when
  they sit next to meta.csv, give the split (row positions in meta.csv).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from skinr1.data.readers.base import (
    ManifestError,
    RowContext,
    RowFields,
    SourceFormat,
    first_column,
    parse_fitzpatrick,
    pick_extra,
    required_text,
    text,
)

DDI_SKIN_TONES = {"12": (1, "I-II"), "34": (3, "III-IV"), "56": (5, "V-VI")}
DERM7PT_IMAGE_COLUMNS = ("derm", "clinic")
DERM7PT_SPLIT_FILES = {"train": "train_indexes.csv", "valid": "valid_indexes.csv", "test": "test_indexes.csv"}


def fitzpatrick17k_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    md5 = required_text(row, "md5hash")
    extra = pick_extra(row, ("fitzpatrick_centaur", "three_partition_label", "nine_partition_label", "qc", "url"))
    three, nine = text(row, "three_partition_label"), text(row, "nine_partition_label")
    if three and nine:
        extra["source_path"] = [three, nine]
    return RowFields(
        row_id=md5,
        image=f"{md5}.jpg",
        label=text(row, "label"),
        # Early releases named the column `fitzpatrick`.
        fitzpatrick_type=parse_fitzpatrick(first_column(row, "fitzpatrick_scale", "fitzpatrick")),
        extra=extra,
    )


def pad_ufes_20_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    img_id = required_text(row, "img_id")
    return RowFields(
        row_id=img_id.rsplit(".", 1)[0],
        image=img_id,
        label=text(row, "diagnostic"),
        fitzpatrick_type=parse_fitzpatrick(first_column(row, "fitspatrick", "fitzpatrick")),
        extra=pick_extra(row, ("patient_id", "lesion_id", "age", "gender", "region", "diameter_1", "diameter_2", "biopsed")),
    )


def ddi_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    file_name = required_text(row, "DDI_file")
    extra = pick_extra(row, ("malignant", "skin_tone"))
    tone = text(row, "skin_tone").split(".")[0]  # pandas round-trips may write 12.0
    fitzpatrick = None
    if tone in DDI_SKIN_TONES:
        fitzpatrick, group = DDI_SKIN_TONES[tone]
        extra["skin_tone_group"] = group
    return RowFields(
        row_id=first_column(row, "DDI_ID") or file_name.rsplit(".", 1)[0],
        image=file_name,
        label=text(row, "disease"),
        fitzpatrick_type=fitzpatrick,
        extra=extra,
    )


def derm7pt_setup(manifest: Path, options: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Validate the image-column option and load the official split index files if present."""
    column = str(options.get("image_column") or "derm")
    if column not in DERM7PT_IMAGE_COLUMNS:
        raise ManifestError(f"derm7pt: image_column must be one of {DERM7PT_IMAGE_COLUMNS}, got {column!r}")
    if column not in columns:
        raise ManifestError(f"{manifest}: derm7pt image column {column!r} is not in the manifest")
    split_of: dict[int, str] = {}
    for split, file_name in DERM7PT_SPLIT_FILES.items():
        path = manifest.parent / file_name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8-sig", newline="") as handle:
            for cells in csv.reader(handle):
                # One column named `indexes` (sometimes after an unnamed pandas index column).
                value = cells[-1].strip() if cells else ""
                if value.isdigit():
                    split_of[int(value)] = split
    return {"image_column": column, "split_of": split_of}


def derm7pt_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    column = ctx.setup["image_column"]
    image = required_text(row, column)
    other = "clinic" if column == "derm" else "derm"
    # case_num: both images of a case show one lesion; `skinr1 data build` keeps them in one split.
    extra = pick_extra(row, (other, "case_num", "seven_point_score", "level_of_diagnostic_difficulty", "location", "sex", "elevation"))
    extra["image_type"] = "dermoscopic" if column == "derm" else "clinical"
    case = first_column(row, "case_num") or str(ctx.index)
    return RowFields(
        # Both images of a case may end up in one merged manifest: keep their ids distinct.
        row_id=f"{case}:{column}",
        image=image,
        label=text(row, "diagnosis"),
        split=ctx.setup["split_of"].get(ctx.index),
        extra=extra,
    )


FITZPATRICK17K = SourceFormat(
    name="fitzpatrick17k",
    description="fitzpatrick17k.csv (md5hash, fitzpatrick_scale, label, ...); images <md5hash>.jpg",
    required=(("md5hash",), ("label",)),
    row_fields=fitzpatrick17k_row,
)

PAD_UFES_20 = SourceFormat(
    name="pad-ufes-20",
    description="PAD-UFES-20 metadata.csv (img_id, diagnostic, fitspatrick, ...); images <img_id>",
    required=(("img_id",), ("diagnostic",)),
    row_fields=pad_ufes_20_row,
)

DDI = SourceFormat(
    name="ddi",
    description="DDI ddi_metadata.csv (DDI_ID, DDI_file, skin_tone, malignant, disease); images <DDI_file>",
    required=(("DDI_file",), ("disease",)),
    row_fields=ddi_row,
)

DERM7PT = SourceFormat(
    name="derm7pt",
    description="Derm7pt meta.csv (case_num, diagnosis, clinic, derm, ...); images <derm> or <clinic>",
    required=(("diagnosis",), DERM7PT_IMAGE_COLUMNS),
    row_fields=derm7pt_row,
    setup=derm7pt_setup,
    options={"image_column": "which image of each case to use: derm (default) or clinic"},
)
