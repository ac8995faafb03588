"""`skinr1 data prepare` on hostile input: every line accounted for, no path escapes, no crash."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from image_probes import jpeg_declaring, png_with_oversized_text
from PIL import Image

from skinr1.cli import main as cli_main
from skinr1.data.prepare import outside_root, prepare
from skinr1.data.records import MAX_JSON_DEPTH, JsonLineError, parse_json_line, read_jsonl


def jpeg(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 90, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


def jpeg_declaring_9000() -> bytes:
    return jpeg_declaring(9000, 9000)


def write_manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(image: str, record_id: str, label: str = "melanoma") -> str:
    return json.dumps({"image": image, "label": label, "record_id": record_id})


def run(tmp_path: Path, lines: list[str]) -> dict:
    manifest = write_manifest(tmp_path / "manifest.jsonl", lines)
    return prepare("generic", manifest, tmp_path / "images", tmp_path / "out", progress=False, workers=1)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(jpeg())
    return folder


def test_a_malformed_png_is_one_unreadable_image_not_an_aborted_run(tmp_path, images):
    (images / "bad.png").write_bytes(png_with_oversized_text())
    report = run(tmp_path, [row("good.jpg", "a"), row("bad.png", "b")])
    assert report["images"]["usable"] == 1 and report["images"]["unreadable"] == 1
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_tiny_jpeg_declaring_9000x9000_is_not_usable(tmp_path, images):
    (images / "liar.jpg").write_bytes(jpeg_declaring_9000())
    report = run(tmp_path, [row("liar.jpg", "a")])
    assert report["images"]["usable"] == 0
    assert report["images"]["unreadable_by_reason"] == {"truncated": 1}


def test_paths_leaving_the_images_folder_are_refused_and_counted(tmp_path, images):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg())
    os.symlink(secret, images / "link.jpg")
    (images / "sub").mkdir()
    os.symlink(tmp_path, images / "sub" / "up")
    lines = [
        row("good.jpg", "ok"),
        row("../secret.jpg", "dotdot"),
        row(str(secret), "absolute"),
        row("link.jpg", "symlink"),
        row("sub/up/secret.jpg", "symlinked_folder"),
        row(str(images / "good.jpg"), "absolute_inside"),
    ]
    report = run(tmp_path, lines)
    assert report["images"]["outside_images"] == 4
    assert report["images"]["usable"] == 2
    assert report["rejected"] == 4
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert {r["extra"]["reject"]["kind"] for r in rejected} == {"outside_images"}
    assert sorted(r["record_id"] for r in rejected) == sorted(
        f"generic:{name}" for name in ("dotdot", "absolute", "symlink", "symlinked_folder")
    )
    text = (tmp_path / "out" / "report.txt").read_text()
    assert "outside" in text


def test_outside_root_is_not_fooled_by_a_shared_prefix(tmp_path):
    root = tmp_path / "images"
    assert outside_root(str(tmp_path / "images-other" / "x.jpg"), str(root))
    assert outside_root(str(root / "a" / ".." / "x.jpg"), str(root)) is None


def test_duplicate_ids_carry_their_line_number(tmp_path, images):
    report = run(tmp_path, [row("good.jpg", "a"), "", row("good.jpg", "b"), row("good.jpg", "a")])
    bad = [json.loads(line) for line in (tmp_path / "out" / "bad_rows.jsonl").read_text().splitlines()]
    assert [(b["kind"], b["line"]) for b in bad] == [("duplicate_id", 4)]
    assert "first on line 1" in bad[0]["reason"]
    assert report["total_rows"] == 3


def test_a_deeply_nested_line_is_a_bad_row_with_its_line_number(tmp_path, images):
    lines = [row("good.jpg", "a"), "[" * 100_000 + "]" * 100_000, '{"image": ' + "[" * 200 + "]" * 200 + "}", row("good.jpg", "b")]
    report = run(tmp_path, lines)
    bad = [json.loads(line) for line in (tmp_path / "out" / "bad_rows.jsonl").read_text().splitlines()]
    assert [(b["line"], b["kind"]) for b in bad] == [(2, "malformed_row"), (3, "malformed_row")]
    assert all("nested" in b["reason"] for b in bad)
    assert report["total_rows"] == 4 and report["usable"] == 2


def test_every_line_is_accounted_for(tmp_path, images):
    (images / "bad.png").write_bytes(png_with_oversized_text())
    lines = [
        row("good.jpg", "1"), "{not json", row("bad.png", "2"), row("missing.jpg", "3"), row("../x.jpg", "4"),
        row("good.jpg", "5", label="no such disease at all"), row("good.jpg", "1"), "[" * 5000, "7" * 5000,
    ]
    report = run(tmp_path, lines)
    images_ = report["images"]
    accounted = (report["bad_rows"]["count"] + report["unmapped"] + images_["usable"] + images_["missing"]
                 + images_["outside_images"] + images_["unreadable"])
    assert report["total_rows"] == len(lines) == accounted


def test_cli_prints_the_outside_count(tmp_path, images, capsys):
    manifest = write_manifest(tmp_path / "m.jsonl", [row("good.jpg", "a"), row("../good.jpg", "b")])
    code = cli_main(["data", "prepare", "--source", "generic", "--manifest", str(manifest), "--images", str(images),
                     "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0 and "1 outside --images" in capsys.readouterr().out


# --------------------------------------------------------------------------- JSON lines
def test_parse_json_line_limits_depth():
    assert parse_json_line("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 100_000, "{", "1" * 5000):
        with pytest.raises(JsonLineError):
            parse_json_line(text)


def test_read_jsonl_reports_a_nested_line_with_its_number(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", ["[" * 100_000 + "]" * 100_000])
    with pytest.raises(ValueError, match=":1:"):
        read_jsonl(path)
