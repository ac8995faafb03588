"""Datasets distributed as one folder per class: DermNet and the Monkeypox Skin Lesion Dataset.

For these `--manifest` is the dataset's folder (and `--images` the same folder). Every image file
below it is one row: the class is the name of the folder holding the file, the split the first
folder on the way named train / training / val / valid / validation / test / testing. Files that
are not images (README, CSV, .DS_Store) are not rows.

Layouts (as downloaded):

* DermNet (Kaggle release of DermNet NZ): train/<class>/<image>.jpg and test/<class>/<image>.jpg,
  23 classes such as "Acne and Rosacea Photos".
* MSLD: "Original Images/<class>/<image>.jpg" with Monkeypox, Chickenpox, Measles, Normal (v2.0:
  Mpox, Chickenpox, Cowpox, HFMD, Healthy, Measles; optionally fold folders with Train/Valid/Test).
  The release also ships "Augmented Images": rotated/flipped copies of the originals, which
  would put near-copies of one photo into several splits. They are reported as bad rows of
  kind `augmented_image`; point the reader at the original images.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from skinr1.data.readers.base import RowContext, RowError, RowFields, RowIterator, SourceFormat, required_text, text
from skinr1.data.readers.tables import ERROR_KEY, ManifestError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid",
                 "test": "test", "testing": "test"}


def class_folder_rows(path: Path, options: Mapping[str, Any]) -> RowIterator:
    """One raw row {'path', 'class', 'split'} per image file below `path`, in sorted order."""
    if not path.is_dir():
        raise ManifestError(f"{path}: expected the dataset folder (one sub-folder per class), got a file")
    files: list[str] = []
    for directory, subdirs, names in os.walk(path):
        subdirs.sort()
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                files.append(os.path.relpath(os.path.join(directory, name), path))
    if not files:
        raise ManifestError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) below this folder")

    def generate() -> RowIterator:
        for number, relative in enumerate(files, start=1):
            parts = PurePosixPath(Path(relative).as_posix()).parts
            if len(parts) < 2:
                yield number, {ERROR_KEY: f"{relative}: image is not inside a class folder"}
                continue
            split = next((SPLIT_FOLDERS[p.lower()] for p in parts[:-2] if p.lower() in SPLIT_FOLDERS), "")
            yield number, {"path": "/".join(parts), "class": parts[-2], "split": split}

    return generate()


def class_folder_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    path = required_text(row, "path")
    return RowFields(
        row_id=path.rsplit(".", 1)[0],  # the relative path: file names repeat across class folders
        image=path,
        label=text(row, "class"),
        split=text(row, "split") or None,
    )


def msld_row(row: dict[str, str], ctx: RowContext) -> RowFields:
    path = required_text(row, "path")
    if any("augmented" in part.lower() for part in path.split("/")[:-1]):
        raise RowError(f"{path}: augmented copy of an original image (read the 'Original Images' folder)", "augmented_image")
    return class_folder_row(row, ctx)


DERMNET = SourceFormat(
    name="dermnet",
    description="DermNet folder: train|test/<class>/<image>; --manifest and --images are the dataset folder",
    required=(),
    row_fields=class_folder_row,
    rows=class_folder_rows,
)

MSLD = SourceFormat(
    name="msld",
    description="Monkeypox Skin Lesion Dataset folder: <class>/<image> (Monkeypox, Chickenpox, Measles, Normal)",
    required=(),
    row_fields=msld_row,
    rows=class_folder_rows,
)
