"""Dermoscopy datasets distributed through the ISIC challenges/archive: HAM10000, ISIC 2019, BCN20000.

Formats (as downloaded):

* HAM10000_metadata.csv: lesion_id, image_id, dx, dx_type, age, sex, localization[, dataset];
  image file `<image_id>.jpg` (the release splits them over HAM10000_images_part_1/_2; the
  prepare step finds files in sub-folders).
* ISIC_2019_Training_GroundTruth.csv: image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK holding
  1.0/0.0 (one-hot); the test ground truth adds score_weight, validation_weight. Image
  `<image>.jpg`. A row with no 1.0 or several is a bad row.
* BCN20000, two styles:
  - challenge release: bcn_filename (BCN_0000000001.jpg), age_approx, anatom_site_general,
    diagnosis (codes MEL, NV, BCC, ...; empty for test images), lesion_id, capture_date, sex, split;
  - ISIC-archive collection export: isic_id, ..., diagnosis (full names) in older exports or the
    hierarchical diagnosis_1 .. diagnosis_5 in newer ones; image `<isic_id>.jpg`.
"""

from __future__ import annotations

from skinr1.data.readers.base import (
    RowContext,
    RowError,
    RowFields,
    SourceFormat,
    first_column,
    is_blank,
    pick_extra,
    required_text,
    text,
)

# One-hot class columns of the ISIC 2018 (AKIEC) and 2019 ground-truth files.
ISIC_CLASS_COLUMNS = ("MEL", "NV", "BCC", "AK", "AKIEC", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC_ARCHIVE_DIAGNOSIS_LEVELS = ("diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2", "diagnosis_1")


def with_extension(name: str, extension: str = ".jpg") -> str:
    """Image ids are written without extension in most ISIC files; add one unless present."""
    return name if "." in name.rsplit("/", 1)[-1] else name + extension


def ham10000_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    image_id = required_text(row, "image_id")
    return RowFields(
        row_id=image_id,
        image=with_extension(image_id),
        label=text(row, "dx"),
        extra=pick_extra(row, ("lesion_id", "dx_type", "age", "sex", "localization", "dataset")),
    )


def isic2019_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    image = required_text(row, "image")
    hot: list[str] = []
    for column in ISIC_CLASS_COLUMNS:
        if column not in row:
            continue
        try:
            value = float(text(row, column) or "nan")
        except ValueError:
            raise RowError(f"column {column} holds {text(row, column)!r}, expected 1.0 or 0.0", "one_hot_value") from None
        if value == 1.0:
            hot.append(column)
        elif value != 0.0:
            raise RowError(f"column {column} holds {text(row, column)!r}, expected 1.0 or 0.0", "one_hot_value")
    if len(hot) != 1:
        found = ", ".join(hot) if hot else "none"
        raise RowError(f"one-hot label needs exactly one class set to 1.0, found {found}", "one_hot_count")
    return RowFields(row_id=image, image=with_extension(image), label=hot[0])


def bcn20000_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    filename = first_column(row, "bcn_filename")
    if filename:  # challenge release: codes, official split column
        extra = pick_extra(row, ("lesion_id", "age_approx", "anatom_site_general", "sex", "capture_date"))
        return RowFields(
            row_id=filename.rsplit(".", 1)[0],
            image=filename,
            label=text(row, "diagnosis"),
            split=first_column(row, "split") or None,
            extra=extra,
        )
    if not first_column(row, "isic_id"):
        raise RowError("neither bcn_filename nor isic_id is set", "missing_value")
    return isic_archive_row(row, ctx)


def isic_archive_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    """A row of an ISIC-archive collection export (isic_id, diagnosis or diagnosis_1..5, ...)."""
    isic_id = required_text(row, "isic_id")
    # Prefer the flat `diagnosis`, else the most specific diagnosis_N, falling back to coarser
    # levels when the specific name is not in the taxonomy.
    levels = [text(row, c) for c in ("diagnosis", *ISIC_ARCHIVE_DIAGNOSIS_LEVELS) if not is_blank(text(row, c))]
    extra = pick_extra(row, ("lesion_id", "patient_id", "age_approx", "anatom_site_general", "sex", "benign_malignant",
                             "diagnosis_confirm_type", "image_type", "attribution"))
    return RowFields(
        row_id=isic_id,
        image=with_extension(isic_id),
        label=levels[0] if levels else "",
        fallback_labels=tuple(levels[1:]),
        extra=extra,
    )


HAM10000 = SourceFormat(
    name="ham10000",
    description="HAM10000_metadata.csv (image_id, dx, ...); images <image_id>.jpg",
    required=(("image_id",), ("dx",)),
    row_fields=ham10000_row,
)

ISIC2019 = SourceFormat(
    name="isic2019",
    description="ISIC_2019_Training_GroundTruth.csv one-hot (image, MEL, NV, ...); images <image>.jpg",
    required=(("image",), ISIC_CLASS_COLUMNS),
    row_fields=isic2019_row,
)

BCN20000 = SourceFormat(
    name="bcn20000",
    description="BCN20000 metadata: challenge style (bcn_filename, diagnosis codes, split) or "
    "ISIC-archive style (isic_id, diagnosis or diagnosis_1..5)",
    required=(("bcn_filename", "isic_id"), ("diagnosis", *ISIC_ARCHIVE_DIAGNOSIS_LEVELS)),
    row_fields=bcn20000_row,
)
