"""More ISIC-archive dermoscopy sets: ISIC 2018 Task 3, ISIC 2020, ISBI 2016 Part 3, Derm12345.

Formats (as downloaded):

* ISIC 2018 Task 3 ground truth (ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv):
  image, MEL, NV, BCC, AKIEC, BKL, DF, VASC holding 1.0/0.0 (one-hot, as ISIC 2019); image
  `<image>.jpg`. The training file is HAM10000; the split is read from the file name.
* ISIC 2020 (ISIC_2020_Training_GroundTruth[_v2].csv): image_name, patient_id, lesion_id (v2),
  sex, age_approx, anatom_site_general_challenge, diagnosis, benign_malignant, target; image
  `<image_name>.jpg`. Most rows say diagnosis "unknown": they fall back to benign_malignant.
* ISBI 2016 Part 3 (ISBI2016_ISIC_Part3_{Training,Test}_GroundTruth.csv): NO header row; two
  cells per row, the image id and the label (training: benign / malignant; test: 0.0 / 1.0 with
  1 = malignant). Image `<id>.jpg`; split from the file name.
* Derm12345 (Yilmaz et al., Sci Data 2024), two layouts:
  - its ISIC-archive metadata: isic_id, diagnosis_1..5 (read like the BCN20000 archive export);
  - the release's own table: an image column (image_id / image / image_name / file_name), the
    subclass (sub_class / subclass / label / diagnosis) with main_class_2, main_class_1,
    main_class, super_class, malignancy as coarser fallbacks, optional split, patient_id,
    lesion_id. Without a split column the file name decides (..._train.csv / ..._test.csv).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from skinr1.data.readers.base import (
    RowContext,
    RowError,
    RowFields,
    RowIterator,
    SourceFormat,
    first_column,
    first_label,
    is_blank,
    pick_extra,
    required_text,
    text,
)
from skinr1.data.readers.isic import isic2019_row, isic_archive_row, with_extension
from skinr1.data.readers.tables import CELLS_KEY, ERROR_KEY, ManifestError

# Words in a release's file name that say which official split it holds.
SPLIT_WORDS = (("test", "test"), ("validation", "valid"), ("valid", "valid"), ("val", "valid"), ("train", "train"))
ISBI_HEADER_CELLS = frozenset({"image", "image_id", "image_name", "isic_id", "id", "name"})
DERM12345_IMAGE_COLUMNS = ("image_id", "image", "image_name", "file_name", "filename")
DERM12345_LABEL_COLUMNS = ("sub_class", "subclass", "label", "diagnosis")
DERM12345_FALLBACK_COLUMNS = ("main_class_2", "main_class_1", "main_class", "super_class", "superclass", "malignancy")


def split_from_name(path: Path) -> str | None:
    """'ISIC2018_Task3_Test_GroundTruth.csv' -> 'test'; None when the name names no split."""
    words = path.stem.lower().replace("-", "_").split("_")
    for word, split in SPLIT_WORDS:
        if word in words or any(w.startswith(word) and w[len(word):] in ("", "ing", "s", "set") for w in words):
            return split
    return None


def _name_split_setup(manifest: Path, options: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {"split": split_from_name(manifest)}


def isic2018_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    fields_ = isic2019_row(row, ctx)  # same one-hot layout, AKIEC instead of AK/SCC/UNK
    fields_.split = ctx.setup["split"]
    return fields_


def isic2020_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    image = required_text(row, "image_name")
    target = text(row, "target")
    fallbacks = [text(row, "benign_malignant")]
    if target in ("0", "1"):  # the 0/1 column says the same as benign_malignant; used only if that is blank
        fallbacks.append("malignant" if target == "1" else "benign")
    return RowFields(
        row_id=image,
        image=with_extension(image),
        label=text(row, "diagnosis"),
        fallback_labels=tuple(f for f in fallbacks if not is_blank(f)),
        extra=pick_extra(row, ("patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
                               "benign_malignant", "target")),
    )


def isbi2016_rows(path: Path, options: Mapping[str, Any]) -> RowIterator:
    """Rows of the headerless two-column ground truth as {'image', 'label'} (a header row is tolerated)."""
    if not path.is_file():
        raise ManifestError(f"{path}: isbi2016 expects the ground-truth CSV file")

    def generate() -> RowIterator:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if line == 1 and cells[0].strip().lower() in ISBI_HEADER_CELLS:
                    continue
                if len(cells) != 2:
                    yield line, {ERROR_KEY: f"row has {len(cells)} fields, expected 2 (image id, label)", CELLS_KEY: cells[:20]}
                    continue
                yield line, {"image": cells[0].strip(), "label": cells[1].strip()}

    return generate()


def isbi2016_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    image = required_text(row, "image")
    return RowFields(row_id=image, image=with_extension(image), label=text(row, "label"), split=ctx.setup["split"])


def derm12345_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    if first_column(row, "isic_id"):
        return isic_archive_row(row, ctx)
    image_column = next((c for c in DERM12345_IMAGE_COLUMNS if first_column(row, c)), None)
    if image_column is None:
        raise RowError(f"no image id in any of {', '.join(DERM12345_IMAGE_COLUMNS)}", "missing_value")
    image = text(row, image_column)
    levels = [text(row, c) for c in DERM12345_FALLBACK_COLUMNS if not is_blank(text(row, c))]
    return RowFields(
        row_id=image.rsplit(".", 1)[0] if "." in image else image,
        image=with_extension(image),
        label=first_label(row, *DERM12345_LABEL_COLUMNS),
        fallback_labels=tuple(levels),
        split=first_column(row, "split") or ctx.setup["split"],
        extra=pick_extra(row, ("patient_id", "lesion_id", *DERM12345_FALLBACK_COLUMNS)),
    )


ISIC2018 = SourceFormat(
    name="isic2018",
    description="ISIC2018_Task3_*_GroundTruth.csv one-hot (image, MEL, NV, BCC, AKIEC, ...); split from the file name",
    required=(("image",), ("AKIEC",)),
    row_fields=isic2018_row,
    setup=_name_split_setup,
)

ISIC2020 = SourceFormat(
    name="isic2020",
    description="ISIC_2020_Training_GroundTruth[_v2].csv (image_name, patient_id, diagnosis, benign_malignant, ...)",
    required=(("image_name",), ("diagnosis", "benign_malignant")),
    row_fields=isic2020_row,
)


ISBI2016 = SourceFormat(
    name="isbi2016",
    description="ISBI2016_ISIC_Part3_*_GroundTruth.csv, no header: image id, benign/malignant or 0/1",
    required=(),
    row_fields=isbi2016_row,
    setup=_name_split_setup,
    rows=isbi2016_rows,
)

DERM12345 = SourceFormat(
    name="derm12345",
    description="Derm12345 metadata: release table (image_id, sub_class, ..., split) or ISIC-archive export (isic_id, diagnosis_1..5)",
    required=(("isic_id", *DERM12345_IMAGE_COLUMNS), (*DERM12345_LABEL_COLUMNS, "diagnosis_1")),
    row_fields=derm12345_row,
    setup=_name_split_setup,
)
