"""The synthetic dataset at scale 0.1: counts, determinism, label mix, skin types, learnable colour code."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinr1.cli import main as cli_main
from skinr1.data.images import check_image
from skinr1.data.records import read_jsonl
from skinr1.data.synthetic import DEMO_LEAVES, SPLITS, SYNTHETIC_SOURCE, load_taxonomy, synthesize
from skinr1.data.synthetic_render import SKIN_TONES, STYLES

SCALE = 0.1


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, seed=0, scale=SCALE)


def load(out: Path, split: str):
    return read_jsonl(out / f"{split}.jsonl")


def test_files_and_counts(synth):
    out, summary = synth
    for name in ("README.txt", "summary.json", *(f"{s}.jsonl" for s in SPLITS)):
        assert (out / name).is_file(), name
    expected = {"dense": 5 * 8, "sparse": 20 * 8, "test": 5 * 8, "test_sparse": 5 * 8, "valid": 1 * 8}
    assert summary["splits"] == expected
    assert {s: len(load(out, s)) for s in SPLITS} == expected
    assert summary["images"] == sum(expected.values()) == len(list((out / "images").rglob("*.png")))
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["splits"] == expected and "elapsed_s" not in on_disk


def test_records_are_well_formed(synth):
    out, _ = synth
    taxonomy = load_taxonomy()
    ids = set()
    for split in SPLITS:
        for record in load(out, split):
            assert record.source == SYNTHETIC_SOURCE and record.split == split
            assert record.node_id in taxonomy and record.label_depth == taxonomy.depth(record.node_id)
            leaf = record.extra["leaf_node_id"]
            assert taxonomy.is_ancestor(record.node_id, leaf)  # a coarse label is always true
            assert Path(record.image).is_file() and leaf not in Path(record.image).name
            ids.add(record.record_id)
    assert len(ids) == sum(len(load(out, s)) for s in SPLITS)


def test_all_leaves_and_categories_and_skin_types(synth):
    out, summary = synth
    taxonomy = load_taxonomy()
    assert {taxonomy.path(leaf)[0] for leaf in DEMO_LEAVES} == {"benign", "malignant", "non_neoplastic"}
    assert summary["categories"] == ["benign", "malignant", "non_neoplastic"]
    for split in SPLITS:
        records = load(out, split)
        assert {r.extra["leaf_node_id"] for r in records} == set(DEMO_LEAVES)
        assert len(set(Counter(r.extra["leaf_node_id"] for r in records).values())) == 1  # balanced
    for split in ("dense", "sparse"):
        assert {r.fitzpatrick_type for r in load(out, split)} == {1, 2, 3, 4, 5, 6}


def test_dense_split_can_be_skewed_to_lighter_skin(tmp_path):
    synthesize(tmp_path, seed=0, scale=SCALE, dense_skin_types=(1, 2, 3))
    assert {r.fitzpatrick_type for r in load(tmp_path, "dense")} == {1, 2, 3}
    for split in ("sparse", "test", "test_sparse"):
        assert {r.fitzpatrick_type for r in load(tmp_path, split)} == {1, 2, 3, 4, 5, 6}


def test_dense_splits_are_leaf_only_and_sparse_ones_mixed(synth):
    out, _ = synth
    taxonomy = load_taxonomy()
    for split in ("dense", "test"):
        assert all(r.node_id == r.extra["leaf_node_id"] for r in load(out, split))
    sparse = load(out, "sparse")
    granularity = Counter(r.extra["granularity"] for r in sparse)
    assert granularity["group"] == granularity["category"] == 32 and granularity["leaf"] == 96  # 40% coarse
    for record in sparse:
        path = taxonomy.path(record.extra["leaf_node_id"])
        expected = {"leaf": record.extra["leaf_node_id"], "group": path[1], "category": path[0]}
        assert record.node_id == expected[record.extra["granularity"]]
    mixed = Counter(r.extra["granularity"] for r in load(out, "test_sparse"))
    assert mixed["group"] > 0 and mixed["category"] > 0 and mixed["leaf"] > 0


def test_images_decode_as_64px_rgb(synth):
    out, _ = synth
    for record in load(out, "test"):
        check = check_image(record.image)
        assert check.ok and (check.width, check.height) == (64, 64) and check.mode == "RGB"


def digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    # Manifests hold absolute paths: hash them with the output folder stripped.
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes().replace(str(out).encode(), b"")).hexdigest()
        for p in files
    }


def test_deterministic_per_seed(synth, tmp_path):
    out, _ = synth
    again = tmp_path / "again"
    synthesize(again, seed=0, scale=SCALE)
    reference = digest(out)
    assert digest(again) == reference
    other = tmp_path / "other"
    synthesize(other, seed=1, scale=SCALE)
    differing = [k for k, v in digest(other).items() if k.endswith(".png") and reference.get(k) != v]
    assert len(differing) > 0.9 * 248


def test_rerun_at_smaller_scale_removes_stale_images(tmp_path):
    synthesize(tmp_path, seed=0, scale=0.05)
    synthesize(tmp_path, seed=0, scale=0.02)
    manifests = sum(len(read_jsonl(tmp_path / f"{s}.jsonl")) for s in SPLITS)
    assert manifests == len(list((tmp_path / "images").rglob("*.png")))


def test_palette_is_far_from_skin_and_from_each_other():
    for leaf, style in STYLES.items():
        for tone in SKIN_TONES.values():
            assert np.linalg.norm(np.subtract(style.colour, tone)) > 50, (leaf, tone)
    for (a, sa), (b, sb) in itertools.combinations(STYLES.items(), 2):
        assert np.linalg.norm(np.subtract(sa.colour, sb.colour)) > 60, (a, b)


def lesion_colour(path: str) -> np.ndarray:
    """Median colour of pixels that differ clearly from the border (background skin)."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[:3].reshape(-1, 3), pixels[-3:].reshape(-1, 3),
                             pixels[:, :3].reshape(-1, 3), pixels[:, -3:].reshape(-1, 3)])
    distance = np.linalg.norm(pixels - np.median(border, axis=0), axis=-1)
    mask = distance > 40
    if mask.sum() < 5:
        mask = distance >= np.percentile(distance, 90)
    return np.median(pixels[mask], axis=0)


def test_colour_alone_separates_the_classes_on_every_skin_type(synth):
    """No training: nearest class-mean lesion colour already classifies held-out images."""
    out, _ = synth
    train, test = load(out, "sparse"), load(out, "test") + load(out, "test_sparse")
    leaves = sorted(DEMO_LEAVES)
    features = np.array([lesion_colour(r.image) for r in train])
    labels = np.array([r.extra["leaf_node_id"] for r in train])
    centroids = np.stack([features[labels == leaf].mean(axis=0) for leaf in leaves])
    test_features = np.array([lesion_colour(r.image) for r in test])
    predicted = np.array(leaves)[np.argmin(((test_features[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    truth = np.array([r.extra["leaf_node_id"] for r in test])
    assert (predicted == truth).mean() >= 0.85


def test_cli_synth(tmp_path, capsys):
    assert cli_main(["data", "synth", "--out", str(tmp_path), "--scale", "0.02", "--seed", "3"]) == 0
    assert "images" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 3
