"""`skinr1 data prepare`: convert one dataset's manifest into a SkinR1 manifest plus an audit report.

Outputs in OUT/:

* manifest.jsonl  records whose label maps onto the taxonomy and whose image is present (and,
                  with check_images, decodes);
* rejected.jsonl  every other record, with `extra.reject = {"kind", "reason"}` (unmapped label,
                  missing image, image outside the images folder, unreadable image) - nothing is
                  dropped silently;
* bad_rows.jsonl  rows that did not even make a record (malformed CSV/JSON line, bad one-hot,
                  duplicate id, ...), each with its line number;
* report.json / report.txt  counts per node, level, reason (see `report.py`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm import tqdm

from skinr1.data.images import DEFAULT_MAX_PIXELS, ImageCheck, check_image
from skinr1.data.readers import BadRow, read_numbered_manifest
from skinr1.data.records import Record, write_jsonl, write_lines_atomic, write_text_atomic
from skinr1.data.report import MISSING, OUTSIDE, UNMAPPED, PrepareReport, render_text
from skinr1.taxonomy import LabelResolver

# Below this many images a process pool costs more to start than it saves.
PARALLEL_MIN_IMAGES = 200


class ImageLocator:
    """Finds a record's image: at its nominal path, else anywhere below the images folder.

    Releases scatter images over sub-folders (HAM10000_images_part_1/_2, PAD-UFES-20 imgs_part_1..3),
    while their manifests name only the file. The folder is indexed once, on the first miss.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._index: dict[str, str | None] | None = None

    def _build_index(self) -> dict[str, str | None]:
        index: dict[str, str | None] = {}
        for directory, _, files in os.walk(self.root):
            for name in files:
                path = os.path.join(directory, name)
                # Exact name, then case-folded name ('.JPG'); a name seen twice is ambiguous (None).
                for key in {name, name.lower()}:
                    index[key] = None if key in index and index[key] != path else path
        return index

    def locate(self, path: str) -> tuple[str | None, str | None]:
        """(found path, None) or (None, why not)."""
        if os.path.isfile(path):
            return path, None
        if self._index is None:
            self._index = self._build_index()
        name = os.path.basename(path)
        for key in (name, name.lower()):
            if key in self._index:
                found = self._index[key]
                if found is None:
                    return None, f"several files named {name!r} under {self.root}"
                return found, None
        return None, f"no file {name!r} at {path} or under {self.root}"


def _check_images(paths: list[str], workers: int, max_pixels: int | None, progress: bool | None) -> list[ImageCheck]:
    """Decode-check images, in worker processes when there are many (decoding is CPU-bound)."""
    bar = tqdm(total=len(paths), desc="checking images", unit="img", file=sys.stderr, disable=_disabled(progress))
    results: list[ImageCheck] = []
    with bar:
        if workers > 1 and len(paths) >= PARALLEL_MIN_IMAGES:
            # spawn: forking a process that may hold threads (tqdm's monitor, Ray) is unsafe.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                caps = [max_pixels] * len(paths)
                for result in pool.map(_check_one, paths, caps, chunksize=32):
                    results.append(result)
                    bar.update()
        else:
            for path in paths:
                results.append(_check_one(path, max_pixels))
                bar.update()
    return results


def _check_one(path: str, max_pixels: int | None) -> ImageCheck:
    try:
        return check_image(path, max_pixels=max_pixels)
    except Exception as error:  # noqa: BLE001 - one image must never end the run without a report
        return ImageCheck(ok=False, reason=f"{type(error).__name__}: {error}", kind="corrupt")


def outside_root(path: str, root: str) -> str | None:
    """Why `path` is not an image under `root` (lexically, then after resolving symlinks), or None.

    Manifests are data, not instructions: '../', absolute paths elsewhere and symlinks leading out
    of the images folder would let a manifest publish any readable file as a training image.
    """
    if not _within(os.path.normpath(os.path.abspath(path)), os.path.normpath(root)):
        return f"{path} is outside the images folder {root}"
    real = os.path.realpath(path)
    if not _within(real, _real_root(root)):
        return f"{path} resolves to {real}, outside the images folder {root}"
    return None


@lru_cache(maxsize=8)
def _real_root(root: str) -> str:
    return os.path.realpath(root)  # once per run, not once per record


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _disabled(progress: bool | None) -> bool | None:
    # tqdm: disable=None hides the bar when stderr is not a terminal (logs, CI, tests).
    return None if progress is None else not progress


def _rejected(record: Record, kind: str, reason: str) -> Record:
    extra = dict(record.extra)
    extra["reject"] = {"kind": kind, "reason": reason}
    return replace(record, extra=extra)


def prepare(
    source: str,
    manifest: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    check_images: bool = True,
    options: Mapping[str, Any] | None = None,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool | None = None,
    resolver: LabelResolver | None = None,
) -> dict[str, Any]:
    """Read, map and image-check one dataset; write OUT/* and return the report dict.

    Raises `ManifestError` (a ValueError) when the manifest as a whole is unusable; a run that
    completes - even with every image missing - returns normally.
    """
    started = time.perf_counter()
    if resolver is None:
        from skinr1.taxonomy import default_resolver

        resolver = default_resolver()
    images_root = os.path.abspath(images_dir)
    out = Path(out_dir)
    items = read_numbered_manifest(source, manifest, images_root, resolver=resolver, options=options)
    report = PrepareReport(
        resolver.taxonomy,
        {
            "source": source,
            "manifest": os.path.abspath(manifest),
            "images_dir": images_root,
            "out_dir": os.path.abspath(out),
            "check_images": check_images,
            "options": dict(options or {}),
        },
    )

    mapped, rejected, bad_rows = _collect(items, report, progress)
    usable = _sort_images(mapped, report, rejected, images_root, check_images, workers, max_pixels, progress)

    write_jsonl(out / "manifest.jsonl", usable)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_lines_atomic(out / "bad_rows.jsonl", (json.dumps(b.to_dict(), ensure_ascii=False) for b in bad_rows))
    result = report.to_dict()
    result["elapsed_s"] = round(time.perf_counter() - started, 3)
    write_text_atomic(out / "report.json", json.dumps(result, indent=2, ensure_ascii=False))
    write_text_atomic(out / "report.txt", render_text(result))
    return result


def _collect(
    items: Iterable[tuple[int, Record | BadRow]], report: PrepareReport, progress: bool | None
) -> tuple[list[Record], list[Record], list[BadRow]]:
    """Split numbered reader output into mapped records, rejected (unmapped) records and bad rows."""
    mapped: list[Record] = []
    rejected: list[Record] = []
    bad_rows: list[BadRow] = []
    first_line: dict[str, int] = {}
    for line, item in tqdm(items, desc="reading rows", unit="row", file=sys.stderr, disable=_disabled(progress)):
        if isinstance(item, BadRow):
            bad = item
        elif item.record_id in first_line:
            # Two rows claiming one id would make trajectories and eval results ambiguous.
            reason = f"duplicate record id {item.record_id} (first on line {first_line[item.record_id]})"
            bad = BadRow(line, reason, {"image": item.image}, kind="duplicate_id")
        else:
            first_line[item.record_id] = line
            report.add_record(item)
            if item.mapped:
                mapped.append(item)
            else:
                rejected.append(_rejected(item, UNMAPPED, item.extra.get("unmapped_reason", "unmapped label")))
            continue
        bad_rows.append(bad)
        report.add_bad_row(bad)
    return mapped, rejected, bad_rows


def _sort_images(
    mapped: list[Record],
    report: PrepareReport,
    rejected: list[Record],
    images_root: str,
    check_images: bool,
    workers: int | None,
    max_pixels: int | None,
    progress: bool | None,
) -> list[Record]:
    """Locate (and optionally decode) each mapped record's image; return the usable records."""
    locator = ImageLocator(images_root)
    present: list[Record] = []
    for record in mapped:
        outside = outside_root(record.image, images_root)
        found, why = (None, None) if outside else locator.locate(record.image)
        if found is not None:
            outside = outside_root(found, images_root)
        if outside:
            report.add_image_outcome(record, OUTSIDE, outside)
            rejected.append(_rejected(record, OUTSIDE, outside))
        elif found is None:
            report.add_image_outcome(record, MISSING, why)
            rejected.append(_rejected(record, MISSING, why or "missing"))
        else:
            present.append(record if found == record.image else replace(record, image=found))
    if not check_images:
        for record in present:
            report.add_image_outcome(record, None)
        return present
    checks = _check_images([r.image for r in present], workers or min(8, os.cpu_count() or 1), max_pixels, progress)
    usable: list[Record] = []
    for record, check in zip(present, checks):
        if check.ok:
            report.add_image_outcome(record, None)
            usable.append(record)
        else:
            kind = check.kind or "unreadable"
            report.add_image_outcome(record, kind, check.reason)
            rejected.append(_rejected(record, kind, check.reason or kind))
    return usable
