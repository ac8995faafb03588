"""`skinr1 data prepare`: outputs, report counts, image problems, and the Fitzpatrick17k acceptance run."""

from __future__ import annotations

import io
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

import skinr1.data
import skinr1.data.prepare as prepare_module
from skinr1.cli import main as cli_main
from skinr1.data.prepare import ImageLocator, prepare
from skinr1.data.records import read_jsonl
from skinr1.pipeline.harmonization import find_fitzpatrick_csv
from skinr1.taxonomy import default_resolver

FIXTURES = Path(skinr1.data.__file__).parent / "samples"
FITZPATRICK_CSV = find_fitzpatrick_csv() or Path("fitzpatrick17k.csv-not-found")


def jpeg(colour=(180, 90, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def ham_images(tmp_path: Path) -> Path:
    """Images for the HAM10000 fixture: two good (one in a sub-folder), one truncated, one empty."""
    images = tmp_path / "images"
    (images / "HAM10000_images_part_2").mkdir(parents=True)
    (images / "ISIC_0027419.jpg").write_bytes(jpeg())
    (images / "HAM10000_images_part_2" / "ISIC_0026769.jpg").write_bytes(jpeg((90, 60, 40)))
    data = jpeg()
    (images / "ISIC_0031633.jpg").write_bytes(data[: len(data) // 2])
    (images / "ISIC_0029176.jpg").write_bytes(b"")
    return images


def run_ham(tmp_path: Path, images: Path, **kwargs) -> tuple[dict, Path]:
    out = tmp_path / "out"
    report = prepare("ham10000", FIXTURES / "HAM10000_metadata.csv", images, out, progress=False, **kwargs)
    return report, out


def test_prepare_counts_every_row_once(tmp_path, ham_images):
    report, out = run_ham(tmp_path, ham_images)
    assert report["total_rows"] == 9 and report["records"] == 9 and report["bad_rows"]["count"] == 0
    assert report["mapped"] == 8 and report["unmapped"] == 1
    images = report["images"]
    assert images["usable"] == 2 and images["missing"] == 4 and images["unreadable"] == 2
    assert set(images["unreadable_by_reason"]) == {"empty", "truncated"}
    assert report["rejected"] == 1 + 4 + 2
    assert report["unmapped_labels"] == [
        {"label": "xyz", "count": 1, "reason": report["unmapped_labels"][0]["reason"]}
    ]
    assert report["per_level"] == {"2": 1, "3": 7}
    melanoma = report["per_node"]["melanoma"]
    assert melanoma["path"] == ["malignant", "malignant melanoma", "melanoma"] and melanoma["usable"] == 0

    manifest = read_jsonl(out / "manifest.jsonl")
    assert sorted(r.record_id for r in manifest) == ["ham10000:ISIC_0026769", "ham10000:ISIC_0027419"]
    assert all(Path(r.image).is_file() for r in manifest)
    assert any("HAM10000_images_part_2" in r.image for r in manifest)  # found in a sub-folder

    rejected = read_jsonl(out / "rejected.jsonl")
    kinds = Counter(r.extra["reject"]["kind"] for r in rejected)
    assert kinds == {"missing_image": 4, "unmapped": 1, "empty": 1, "truncated": 1}
    assert len(manifest) + len(rejected) == report["records"]

    text = (out / "report.txt").read_text()
    assert "unmapped labels" in text and "'xyz'" in text and "truncated" in text
    assert json.loads((out / "report.json").read_text())["mapped"] == 8


def test_no_check_images_only_tests_existence(tmp_path, ham_images):
    report, _ = run_ham(tmp_path, ham_images, check_images=False)
    assert report["images"]["usable"] == 4 and report["images"]["unreadable"] == 0
    assert report["images"]["checked_decode"] is False


def test_parallel_image_checks_match_serial(tmp_path, ham_images, monkeypatch):
    serial, _ = run_ham(tmp_path, ham_images, workers=1)
    pools = []

    class SpyPool(prepare_module.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(prepare_module, "ProcessPoolExecutor", SpyPool)
    parallel, _ = run_ham(tmp_path, ham_images, workers=2)
    assert len(pools) == 1 and pools[0]["max_workers"] == 2
    for key in ("usable", "missing", "unreadable", "unreadable_by_reason"):
        assert parallel["images"][key] == serial["images"][key]


def test_bad_rows_and_duplicates_are_reported(tmp_path):
    manifest = tmp_path / "gt.csv"
    shutil.copy(FIXTURES / "ISIC_2019_Training_GroundTruth.csv", manifest)
    with open(manifest, "a") as handle:
        handle.write("ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n")  # duplicate id
    report = prepare("isic2019", manifest, tmp_path / "none", tmp_path / "out", progress=False)
    assert report["bad_rows"]["count"] == 4
    assert report["bad_rows"]["by_kind"] == {"one_hot_count": 2, "one_hot_value": 1, "duplicate_id": 1}
    assert report["total_rows"] == 10
    lines = (tmp_path / "out" / "bad_rows.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["kind"] == "one_hot_count"


def test_locator_refuses_ambiguous_names(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(b"1")
    found, why = ImageLocator(tmp_path).locate(str(tmp_path / "x.jpg"))
    assert found is None and "several" in why
    found, _ = ImageLocator(tmp_path).locate(str(tmp_path / "a" / "x.jpg"))
    assert found == str(tmp_path / "a" / "x.jpg")


def test_cli_prepare_on_fixture(tmp_path, ham_images, capsys):
    out = tmp_path / "cli"
    code = cli_main(["data", "prepare", "--source", "HAM10000", "--manifest", str(FIXTURES / "HAM10000_metadata.csv"),
                     "--images", str(ham_images), "--out", str(out), "--quiet", "--no-check-images"])
    assert code == 0 and (out / "manifest.jsonl").is_file()
    assert "8 mapped" in capsys.readouterr().out


def test_cli_reports_unusable_manifest_as_error(tmp_path, capsys):
    code = cli_main(["data", "prepare", "--source", "ddi", "--manifest", str(FIXTURES / "HAM10000_metadata.csv"),
                     "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "missing column" in capsys.readouterr().err


@pytest.mark.skipif(not FITZPATRICK_CSV.is_file(), reason="real Fitzpatrick17k CSV not available")
def test_fitzpatrick17k_acceptance(tmp_path, capsys):
    out = tmp_path / "fz"
    started = time.perf_counter()
    code = cli_main(["data", "prepare", "--source", "fitzpatrick17k", "--manifest", str(FITZPATRICK_CSV),
                     "--images", "/nonexistent", "--out", str(out), "--quiet"])
    elapsed = time.perf_counter() - started
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["total_rows"] == 16577 and report["mapped"] == 16577 and report["unmapped"] == 0
    assert report["images"]["missing"] == 16577 and report["usable"] == 0 and report["bad_rows"]["count"] == 0
    check = report["hierarchy_check"]
    assert check["checked"] == 16577 and check["consistent"] == 16577 and not check["mismatches"]
    # Per node: every partition pair the CSV gives equals the first two names of the node's path.
    for node_id, info in report["per_node"].items():
        for pair in info["source_paths"]:
            assert pair == " > ".join(info["path"][:2]), node_id
    # Per row: the same check straight from the rejected records.
    taxonomy = default_resolver().taxonomy
    rows = read_jsonl(out / "rejected.jsonl")
    assert len(rows) == 16577
    assert all(taxonomy.path_names(r.node_id)[:2] == r.extra["source_path"] for r in rows)
    assert elapsed < 20, f"prepare took {elapsed:.1f} s"
