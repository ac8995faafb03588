"""Manifest readers on small fixtures that mimic each dataset's real file layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import skinr1.data
from skinr1.cli.data_cmd import SOURCE_CHOICES
from skinr1.data.readers import FORMATS, BadRow, ManifestError, format_for, read_manifest
from skinr1.data.readers.base import parse_fitzpatrick
from skinr1.data.records import Record, read_jsonl, write_jsonl

FIXTURES = Path(skinr1.data.__file__).parent / "samples"
IMAGES = Path("/images")


def read(source: str, name: str, **options) -> tuple[list[Record], list[BadRow]]:
    items = list(read_manifest(source, FIXTURES / name, IMAGES, options=options or None))
    records = [i for i in items if isinstance(i, Record)]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert len(records) + len(bad) == len(items)
    return records, bad


def by_id(records: list[Record]) -> dict[str, Record]:
    return {r.record_id: r for r in records}


def unmapped(records: list[Record]) -> list[Record]:
    return [r for r in records if r.node_id is None]


# --------------------------------------------------------------------------- record basics
def test_record_round_trip_and_atomic_write(tmp_path):
    record = Record("x:1", "/a.png", "melanoma", 3, "ham10000", "mel", 2, "train", {"k": [1, 2]})
    assert Record.from_dict(record.to_dict()) == record
    path = tmp_path / "sub" / "m.jsonl"
    assert write_jsonl(path, [record, record.to_dict()]) == 2
    assert read_jsonl(path) == [record, record]
    assert [p.name for p in path.parent.iterdir()] == ["m.jsonl"]  # no temp file left behind


def test_record_rejects_bad_skin_type_and_unknown_fields():
    with pytest.raises(ValueError):
        Record("x", "a", None, None, "s", "l", fitzpatrick_type=7)
    with pytest.raises(ValueError):
        Record.from_dict({"record_id": "x", "image": "a", "node_id": None, "label_depth": None,
                          "source": "s", "original_label": "l", "colour": "red"})


def test_read_jsonl_names_the_bad_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"record_id": "a"}\n')
    with pytest.raises(ValueError, match=":1:"):
        read_jsonl(path)


@pytest.mark.parametrize("value, expected", [("3", 3), ("3.0", 3), (4, 4), ("-1", None), ("", None),
                                             ("UNK", None), ("7", None), ("2.5", None), ("abc", None)])
def test_parse_fitzpatrick(value, expected):
    assert parse_fitzpatrick(value) == expected


def test_format_lookup_accepts_spellings():
    assert format_for("PAD-UFES-20").name == "pad-ufes-20"
    assert format_for("ISIC2019").name == "isic2019"
    assert format_for("generic").name == "generic"
    with pytest.raises(ManifestError):
        format_for("imagenet")
    assert set(FORMATS) == {"fitzpatrick17k", "ham10000", "isic2019", "bcn20000", "pad-ufes-20", "ddi", "derm7pt",
                            "derm12345", "dermnet", "isic2018", "isic2020", "isbi2016", "msld", "omnimedvqa", "generic"}
    assert set(SOURCE_CHOICES) == set(FORMATS)  # the CLI's literal list (kept import-free for --help)


# --------------------------------------------------------------------------- per format
def test_fitzpatrick17k():
    records, bad = read("fitzpatrick17k", "fitzpatrick17k.csv")
    assert len(records) == 9 and len(bad) == 1 and bad[0].kind == "malformed_row"
    rec = by_id(records)["fitzpatrick17k:d2bac3c9e4499032ca8e9b07c7d3bc40"]
    assert rec.image == "/images/d2bac3c9e4499032ca8e9b07c7d3bc40.jpg"
    assert rec.node_id == "dermatofibroma" and rec.label_depth == 3 and rec.fitzpatrick_type == 2
    assert rec.extra["source_path"] == ["benign", "benign dermal"] and rec.split == "all"
    assert by_id(records)["fitzpatrick17k:9bc21ae9502b720f604907ff56dbc4c7"].fitzpatrick_type is None  # -1
    [unknown] = unmapped(records)
    assert unknown.original_label == "glowing purple spots" and "not in" in unknown.extra["unmapped_reason"]


def test_ham10000():
    records, bad = read("ham10000", "HAM10000_metadata.csv")
    assert not bad and len(records) == 9
    nodes = {r.original_label: r.node_id for r in records}
    assert nodes["mel"] == "melanoma" and nodes["nv"] == "melanocytic_nevus" and nodes["bcc"] == "basal_cell_carcinoma"
    assert nodes["akiec"] == "malignant_epidermal"  # a coarse label maps to the group it means
    rec = by_id(records)["ham10000:ISIC_0029176"]
    assert rec.image == "/images/ISIC_0029176.jpg" and rec.extra["lesion_id"] == "HAM_0002761"
    assert rec.extra["dataset"] == "rosendahl" and rec.fitzpatrick_type is None
    assert [r.original_label for r in unmapped(records)] == ["xyz"]


def test_isic2019_one_hot_and_bad_rows():
    records, bad = read("isic2019", "ISIC_2019_Training_GroundTruth.csv")
    assert {r.original_label: r.node_id for r in records} == {
        "NV": "melanocytic_nevus", "MEL": "melanoma", "BCC": "basal_cell_carcinoma",
        "SCC": "squamous_cell_carcinoma", "UNK": None, "AK": "actinic_keratosis",
    }
    assert by_id(records)["isic2019:ISIC_0000002"].image == "/images/ISIC_0000002.jpg"
    assert "UNK" in unmapped(records)[0].extra["unmapped_reason"]
    assert [b.kind for b in bad] == ["one_hot_count", "one_hot_count", "one_hot_value"]
    assert "found none" in bad[0].reason and "MEL, NV" in bad[1].reason and "'abc'" in bad[2].reason
    assert [b.line for b in bad] == [8, 9, 10] and bad[0].row["image"] == "ISIC_0011111"


def test_bcn20000_challenge_style():
    records, bad = read("bcn20000", "bcn20000_challenge_metadata.csv")
    assert not bad
    rec = by_id(records)["bcn20000:BCN_0000000004"]
    assert rec.image == "/images/BCN_0000000004.jpg" and rec.node_id == "squamous_cell_carcinoma"
    assert rec.split == "train" and rec.extra["lesion_id"] == "BCN_0003499"
    test_row = by_id(records)["bcn20000:BCN_0000020001"]
    assert test_row.split == "test" and test_row.node_id is None  # test images have no diagnosis
    assert sorted(r.original_label for r in unmapped(records)) == ["", "XYZ"]


def test_bcn20000_isic_archive_styles():
    records, bad = read("bcn20000", "bcn20000_archive_metadata.csv")
    assert not bad
    rec = by_id(records)["bcn20000:ISIC_0052214"]
    assert rec.image == "/images/ISIC_0052214.jpg" and rec.node_id == "basal_cell_carcinoma"
    assert {r.original_label for r in unmapped(records)} == {"unknown", "wobbly lesion"}

    records, bad = read("bcn20000", "bcn20000_archive_hierarchical.csv")
    nodes = {r.record_id: r.node_id for r in records}
    assert nodes["bcn20000:ISIC_0062212"] == "melanoma"  # most specific level used
    assert nodes["bcn20000:ISIC_0062215"] == "benign"  # only diagnosis_1 given
    fallback = by_id(records)["bcn20000:ISIC_0062214"]
    assert fallback.node_id == "benign_epidermal" and fallback.label_depth == 2
    assert fallback.extra["label_fallback"]["from"] == "Brand new keratosis subtype"
    assert nodes["bcn20000:ISIC_0062216"] is None  # "Indeterminate" is deliberately unmapped


def test_pad_ufes_20():
    records, bad = read("pad-ufes-20", "pad_ufes_20_metadata.csv")
    assert not bad and len(records) == 9
    rec = by_id(records)["pad-ufes-20:PAT_46_881_939"]
    assert rec.image == "/images/PAT_46_881_939.png" and rec.node_id == "basal_cell_carcinoma"
    assert rec.fitzpatrick_type == 3 and rec.extra["region"] == "NECK"
    assert by_id(records)["pad-ufes-20:PAT_1516_1765_530"].fitzpatrick_type is None  # blank
    assert {r.original_label: r.node_id for r in records}["SEK"] == "seborrheic_keratosis"
    assert [r.original_label for r in unmapped(records)] == ["XYZ"]


def test_ddi_skin_tone_pairs():
    records, bad = read("ddi", "ddi_metadata.csv")
    assert not bad and len(records) == 9
    types = {r.record_id: (r.fitzpatrick_type, r.extra.get("skin_tone_group")) for r in records}
    assert types["ddi:1"] == (5, "V-VI") and types["ddi:5"] == (1, "I-II") and types["ddi:6"] == (3, "III-IV")
    assert types["ddi:9"] == (None, None)  # 78 is not a DDI tone group
    rec = by_id(records)["ddi:1"]
    assert rec.image == "/images/000001.png" and rec.node_id == "melanoma_in_situ" and rec.extra["malignant"] == "True"
    assert [r.original_label for r in unmapped(records)] == ["made-up-dermatosis"]


def test_derm7pt_image_column_and_official_split():
    records, bad = read("derm7pt", "derm7pt/meta.csv")
    assert not bad and len(records) == 8
    rec = by_id(records)["derm7pt:5:derm"]
    assert rec.image == "/images/Fal/Fal013.jpg" and rec.node_id == "melanoma" and rec.split == "train"
    assert rec.extra["clinic"] == "Fal/Fal014.jpg" and rec.extra["image_type"] == "dermoscopic"
    assert [r.split for r in records] == ["train", "train", "valid", "train", "train", "valid", "train", "test"]
    misc = unmapped(records)
    assert [r.original_label for r in misc] == ["miscellaneous"] and "mix" in misc[0].extra["unmapped_reason"]

    clinic, _ = read("derm7pt", "derm7pt/meta.csv", image_column="clinic")
    assert by_id(clinic)["derm7pt:5:clinic"].image == "/images/Fal/Fal014.jpg"
    with pytest.raises(ManifestError):
        read("derm7pt", "derm7pt/meta.csv", image_column="photo")


def test_generic_csv():
    records, bad = read("generic", "generic.csv")
    rec = by_id(records)
    assert rec["generic:a/one.png"].node_id == "melanoma" and rec["generic:a/one.png"].image == "/images/a/one.png"
    assert rec["ham10000:b/two.png"].node_id == "melanocytic_nevus"  # resolved in HAM10000's vocabulary
    assert rec["generic:three.png"].node_id == "basal_cell_carcinoma" and rec["generic:three.png"].fitzpatrick_type == 6
    assert rec["generic:four.png"].label_depth == 1
    assert rec["generic:three.png"].extra["note"] == "spelling variant"
    assert [r.original_label for r in unmapped(records)] == ["not a disease"]
    assert [b.kind for b in bad] == ["invalid_value"]


def test_generic_jsonl_accepts_skinr1_manifests():
    records, bad = read("generic", "generic.jsonl")
    assert [b.line for b in bad] == [3] and bad[0].kind == "malformed_row"
    rec = by_id(records)
    synthetic = rec["synthetic:dense:00001"]  # not prefixed twice, absolute path kept
    assert synthetic.source == "synthetic" and synthetic.image == "/data/x/dense_00001.png"
    assert synthetic.node_id == "melanoma" and synthetic.extra["leaf_node_id"] == "melanoma"
    assert rec["generic:seven.png"].split == "val" and rec["generic:eight.png"].split == "all"


# --------------------------------------------------------------------------- whole-file errors
def test_wrong_format_names_missing_columns():
    with pytest.raises(ManifestError, match="missing column.*md5hash"):
        read_manifest("fitzpatrick17k", FIXTURES / "HAM10000_metadata.csv", IMAGES)


def test_missing_manifest_and_unknown_option(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest("ham10000", tmp_path / "nope.csv", IMAGES)
    with pytest.raises(ManifestError, match="option"):
        read_manifest("ham10000", FIXTURES / "HAM10000_metadata.csv", IMAGES, options={"colour": 1})


def test_split_option_fills_rows_without_split():
    records, _ = read("ham10000", "HAM10000_metadata.csv", split="train")
    assert {r.split for r in records} == {"train"}


def test_reader_survives_hostile_rows(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_bytes(
        b"lesion_id,image_id,dx\n"
        b'HAM_1,"ISIC_1,x",mel\n'  # quoted comma: still 3 fields
        b"HAM_2,,nv\n"  # no image id
        b"HAM_3,ISIC_3\n"  # too few fields
        b"\n"
        b"HAM_4,ISIC_4,\xe9czema\n"  # not UTF-8
        b'HAM_5,"ISIC_5,unterminated quote\n'
    )
    items = list(read_manifest("ham10000", path, IMAGES))
    records = [i for i in items if isinstance(i, Record)]
    bad = [i for i in items if isinstance(i, BadRow)]
    assert [r.record_id for r in records] == ["ham10000:ISIC_1,x", "ham10000:ISIC_4"]
    assert {b.kind for b in bad} >= {"missing_value", "malformed_row"}
    assert json.dumps([b.to_dict() for b in bad])  # reportable
