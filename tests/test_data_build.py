"""`skinr1 data build`: the pure split/dedup rules, and whole builds from real-format fixtures.

The pool is written in each dataset's real file layout (HAM10000, ISIC 2019, BCN20000 challenge,
PAD-UFES-20, Fitzpatrick17k, DDI, ISIC 2020), prepared with `skinr1 data prepare`, then built.
Planted: ISIC ids shared by HAM10000 and ISIC 2019 (finer label in ISIC 2019 for AKIEC), a
BCN20000 image byte-identical to a HAM10000 image, several images per lesion and per patient, an
official BCN20000 train/test split with one lesion on both sides, coarse labels, an OOD set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from skinr1.cli import main as cli_main
from skinr1.data import splits as rules
from skinr1.data.build import BuildError, DatasetSpec, Recipe, build
from skinr1.data.prepare import prepare
from skinr1.data.records import read_jsonl
from skinr1.taxonomy import default_taxonomy

HAM_DX = ("nv", "mel", "bkl", "akiec", "bcc", "df", "vasc")
ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
SAME_CLASS = {"nv": "NV", "mel": "MEL", "bkl": "BKL", "bcc": "BCC", "df": "DF", "vasc": "VASC", "akiec": "AK"}
BCN_DX = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC", "SCC")  # AKIEC: a coarse label (malignant epidermal)
PAD_DX = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
FITZ = (("psoriasis", "non-neoplastic", "inflammatory"), ("basal cell carcinoma", "malignant", "malignant epidermal"),
        ("malignant melanoma", "malignant", "malignant melanoma"), ("dermatofibroma", "benign", "benign dermal"),
        ("seborrheic keratosis", "benign", "benign epidermal"), ("eczema", "non-neoplastic", "inflammatory"))
DDI_DX = ("melanoma", "basal-cell-carcinoma", "seborrheic-keratosis", "verruca-vulgaris")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def image(folder: Path, name: str, content: bytes | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content if content is not None else f"pixels of {folder.name}/{name}".encode())


def make_pool(root: Path, n: int) -> dict[str, tuple[str, Path, Path]]:
    """Real-format dataset files for ~6n images: {dataset: (source, manifest, images folder)}."""
    pool: dict[str, tuple[str, Path, Path]] = {}
    # HAM10000: n lesions, every third with two images.
    ham_img, ham_rows, ham_ids = root / "ham/images", [], []
    for k in range(n):
        for i in range(2 if k % 3 == 0 else 1):
            iid = f"ISIC_{len(ham_ids):07d}"
            ham_ids.append((iid, HAM_DX[k % 7]))
            ham_rows.append([f"HAM_{k:07d}", iid, HAM_DX[k % 7], "histo", "50.0", "male", "back"])
            image(ham_img, f"{iid}.jpg")
    pool["ham10000"] = ("ham10000", write_csv(root / "ham/HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type",
                                                                                  "age", "sex", "localization"], ham_rows), ham_img)
    # ISIC 2019: every second HAM image again (re-encoded: other bytes, same ISIC id) + n own images.
    isic_img, isic_rows = root / "isic2019/images", []
    for iid, dx in ham_ids[::2]:
        isic_rows.append([iid] + [1.0 if c == SAME_CLASS[dx] else 0.0 for c in ISIC_CLASSES])
        image(isic_img, f"{iid}.jpg", f"re-encoded {iid}".encode())
    for k in range(n):
        iid, label = f"ISIC_{5_000_000 + k:07d}", ISIC_CLASSES[k % 8]
        isic_rows.append([iid] + [1.0 if c == label else 0.0 for c in ISIC_CLASSES])
        image(isic_img, f"{iid}.jpg")
    pool["isic2019"] = ("isic2019", write_csv(root / "isic2019/ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC_CLASSES],
                                              isic_rows), isic_img)
    # BCN20000 challenge: n/2 lesions x 2 images, official split; lesion 1 straddles train and test;
    # BCN_0000000000 is byte-identical to HAM10000's first image.
    bcn_img, bcn_rows = root / "bcn/images", []
    for k in range(max(n // 2, 2)):
        for i in range(2):
            name = f"BCN_{2 * k + i:010d}.jpg"
            split = "test" if k % 4 == 3 or (k == 1 and i == 1) else "train"
            bcn_rows.append([name, "60", "anterior torso", BCN_DX[k % 8], f"BCN_{k:07d}", "2020", "female", split])
            image(bcn_img, name, (ham_img / f"{ham_ids[0][0]}.jpg").read_bytes() if 2 * k + i == 0 else None)
    pool["bcn20000"] = ("bcn20000", write_csv(root / "bcn/bcn20000_metadata.csv", [
        "bcn_filename", "age_approx", "anatom_site_general", "diagnosis", "lesion_id", "capture_date", "sex", "split"],
        bcn_rows), bcn_img)
    # PAD-UFES-20: n/4 patients x 2 lesions x 1-2 images.
    pad_img, pad_rows = root / "pad/images", []
    for p in range(max(n // 4, 2)):
        for les in range(2):
            for i in range(1 + (p + les) % 2):
                name = f"PAT_{p}_{les}_{i}.png"
                pad_rows.append([f"PAT_{p}", f"{p * 10 + les}", PAD_DX[(p + les) % 6], str(1 + p % 6), name, "True"])
                image(pad_img, name)
    pool["pad-ufes-20"] = ("pad-ufes-20", write_csv(root / "pad/metadata.csv", [
        "patient_id", "lesion_id", "diagnostic", "fitspatrick", "img_id", "biopsed"], pad_rows), pad_img)
    # Fitzpatrick17k: n images, no groups, skin types 1-6 or unknown.
    fitz_img, fitz_rows = root / "fitz/images", []
    for k in range(n):
        label, three, nine = FITZ[k % len(FITZ)]
        md5 = hashlib.md5(f"fitz{k}".encode()).hexdigest()
        fitz_rows.append([md5, str(k % 7 or -1), label, nine, three])
        image(fitz_img, f"{md5}.jpg")
    pool["fitzpatrick17k"] = ("fitzpatrick17k", write_csv(root / "fitz/fitzpatrick17k.csv", [
        "md5hash", "fitzpatrick_scale", "label", "nine_partition_label", "three_partition_label"], fitz_rows), fitz_img)
    # DDI (out of domain).
    ddi_img, ddi_rows = root / "ddi/images", []
    for k in range(max(n // 8, 2)):
        ddi_rows.append([str(k), str(k + 1), f"{k + 1:06d}.png", ("12", "34", "56")[k % 3], "True", DDI_DX[k % 4]])
        image(ddi_img, f"{k + 1:06d}.png")
    pool["ddi"] = ("ddi", write_csv(root / "ddi/ddi_metadata.csv", ["", "DDI_ID", "DDI_file", "skin_tone", "malignant",
                                                                     "disease"], ddi_rows), ddi_img)
    # ISIC 2020 (out of domain) sharing HAM10000's second image: the recipe that would leak.
    leak_img = root / "isic2020/images"
    image(leak_img, f"{ham_ids[1][0]}.jpg", b"isic2020 copy")
    image(leak_img, "ISIC_9000000.jpg")
    pool["isic2020"] = ("isic2020", write_csv(root / "isic2020/train.csv", [
        "image_name", "patient_id", "lesion_id", "diagnosis", "benign_malignant", "target"],
        [[ham_ids[1][0], "IP_1", "IL_1", "nevus", "benign", "0"], ["ISIC_9000000", "IP_2", "IL_2", "unknown", "benign", "0"]]),
        leak_img)
    return pool


def prepare_pool(pool, prepared: Path) -> dict[str, int]:
    """Run `skinr1 data prepare` on each dataset; returns the manifest sizes."""
    sizes = {}
    for name, (source, manifest, images) in pool.items():
        sizes[name] = prepare(source, manifest, images, prepared / name, check_images=False, progress=False)["usable"]
    return sizes


IN_DOMAIN = [{"name": "fitzpatrick17k", "train_set": "dense"}, {"name": "pad-ufes-20", "train_set": "dense"},
             "ham10000", "isic2019", "bcn20000"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    sizes = prepare_pool(make_pool(root / "raw", 24), root / "prepared")
    return root / "prepared", sizes


def recipe(prepared_dir: Path, **overrides) -> Recipe:
    values = {"in_domain": IN_DOMAIN, "out_of_domain": ["ddi"], "prepared_dir": str(prepared_dir), **overrides}
    return Recipe(**values)


@pytest.fixture(scope="module")
def built(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    return build(recipe(prepared[0]), out), out


def outputs(out: Path) -> dict[str, list]:
    return {p.name: read_jsonl(p) for p in sorted(out.glob("*.jsonl")) if p.name != "removed.jsonl"}


def partition(name: str) -> str:
    return {"dense.jsonl": "train", "sparse.jsonl": "train", "test_sparse.jsonl": "test", "test.jsonl": "test"}.get(name, name)


def image_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------- pure rules
def test_connected_components_link_through_shared_keys():
    assert rules.connected_components([{"a"}, {"b"}, {"a", "c"}, {"c", "d"}, set(), {"b"}]) == [0, 1, 0, 0, 4, 1]
    assert rules.connected_components([]) == []


def test_choose_kept_prefers_finest_label_then_recipe_order_then_id():
    copies = [rules.Copy(2, 0, "ham:x"), rules.Copy(3, 1, "isic:x"), rules.Copy(3, 2, "bcn:x")]
    assert rules.choose_kept(copies) == 1
    assert rules.choose_kept([rules.Copy(3, 1, "b"), rules.Copy(3, 1, "a")]) == 1
    with pytest.raises(ValueError):
        rules.choose_kept([])


def test_allowed_splits_and_group_settlement():
    assert rules.allowed_splits(None) == {"train", "valid", "test"}
    assert rules.allowed_splits("train") == {"train", "valid"}
    assert rules.allowed_splits("train", carve_valid=False) == {"train"}
    with pytest.raises(ValueError):
        rules.allowed_splits("holdout")
    free, train, test = rules.allowed_splits(None), rules.allowed_splits("train"), rules.allowed_splits("test")
    assert rules.settle_group([free, train]) == ({"train", "valid"}, [])
    assert rules.settle_group([free, test]) == ({"test"}, [])
    assert rules.settle_group([train, free, test, train]) == ({"test"}, [0, 3])  # official test wins


def test_stratified_group_split_keeps_groups_whole_and_follows_fractions():
    groups = [rules.Group(f"g{i}", ("mel",) * (1 + i % 3) if i % 2 else ("nv",) * (1 + i % 4)) for i in range(300)]
    fractions = {"train": 0.6, "valid": 0.2, "test": 0.2}
    assigned = rules.stratified_group_split(groups, fractions, seed=3)
    for label in ("mel", "nv"):
        total = sum(len(g.labels) for g in groups if g.labels[0] == label)
        for split, share in fractions.items():
            placed = sum(len(g.labels) for g, s in zip(groups, assigned) if s == split and g.labels[0] == label)
            assert abs(placed / total - share) < 0.03, (label, split, placed, total)
    # Deterministic, independent of input order, and the seed matters.
    reordered = list(reversed(groups))
    again = dict(zip((g.key for g in reordered), rules.stratified_group_split(reordered, fractions, seed=3)))
    assert again == dict(zip((g.key for g in groups), assigned))
    assert rules.stratified_group_split(groups, fractions, seed=4) != assigned
    assert set(rules.stratified_group_split(groups, {"train": 1.0, "valid": 0.0}, seed=0)) == {"train"}
    with pytest.raises(ValueError):
        rules.stratified_group_split(groups, {"train": 0.0}, seed=0)


def test_shared_keys_names_keys_in_two_partitions():
    pairs = [("train", {"sha:1", "isic:A"}), ("test", {"sha:2"}), ("test", {"isic:A"}), ("train", {"sha:1"})]
    assert rules.shared_keys(pairs) == {"isic:A": {"train", "test"}}


# ------------------------------------------------------------------------------ whole build
def test_build_accounts_for_every_row(prepared, built):
    report, out = built
    sizes = prepared[1]
    expected = {name: sizes[name] for name in ("fitzpatrick17k", "pad-ufes-20", "ham10000", "isic2019", "bcn20000", "ddi")}
    assert {name: entry["rows"] for name, entry in report["accounting"].items()} == expected
    files = outputs(out)
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert sum(len(records) for records in files.values()) + len(removed) == sum(expected.values())
    assert report["all_rows_accounted"] and all(e["balanced"] for e in report["accounting"].values())
    assert sum(report["removed"].values()) == len(removed)
    assert {r["reason"] for r in removed} == {"duplicate", "group_split_conflict"}
    assert (out / "report.txt").read_text().count("every row accounted for: True") == 1


def test_nothing_leaks_across_splits(built):
    _, out = built
    seen = defaultdict(set)
    for name, records in outputs(out).items():
        for record in records:
            keys = {f"sha:{image_hash(record.image)}", f"id:{record.record_id}"}
            keys |= {f"isic:{part}" for part in (record.record_id.split(":")[-1],) if part.startswith("ISIC_")}
            keys |= {f"{k}:{record.extra[k]}" for k in ("lesion_id", "patient_id") if k in record.extra}
            for key in keys:
                seen[key].add(partition(name))
    crossing = {key: parts for key, parts in seen.items() if len(parts) > 1}
    assert crossing == {}
    assert all(v["crossing_splits"] == 0 for v in built[0]["leakage_check"]["by_key"].values())
    assert {"isic", "sha", "lesion_id", "patient_id"} <= set(built[0]["leakage_check"]["by_key"])


def test_duplicates_keep_the_finest_label_and_name_the_kept_record(built):
    report, out = built
    removed = {r["record_id"]: r for r in map(json.loads, (out / "removed.jsonl").read_text().splitlines())}
    kept = {r.record_id: r for records in outputs(out).values() for r in records}
    # HAM10000 says akiec (malignant epidermal, depth 2) for ISIC_0000004, ISIC 2019 says AK (depth 3).
    assert removed["ham10000:ISIC_0000004"]["related"] == "isic2019:ISIC_0000004"
    assert kept["isic2019:ISIC_0000004"].node_id == "actinic_keratosis"
    # Same label depth: the earlier dataset in the recipe (HAM10000) wins.
    assert removed["isic2019:ISIC_0000000"]["related"] == "ham10000:ISIC_0000000"
    # A byte-identical copy under another name is found by its hash.
    assert removed["bcn20000:BCN_0000000000"] == {"record_id": "bcn20000:BCN_0000000000", "dataset": "bcn20000",
                                                  "reason": "duplicate", "related": "ham10000:ISIC_0000000", "detail": "sha"}
    assert report["duplicates"]["label_conflicts"]["count"] >= 1  # that copy was labelled differently
    for row in removed.values():
        if row["reason"] == "duplicate":
            assert row["related"] in kept
            assert row["record_id"] in kept[row["related"]].extra["build"]["duplicates"]
    # The kept copy carries the lesion of the removed HAM10000 copy, so its siblings follow it.
    sibling = kept["ham10000:ISIC_0000005"]  # same lesion (HAM_0000003) as ISIC_0000004
    assert sibling.split == kept["isic2019:ISIC_0000004"].split


def test_official_split_kept_and_straddling_lesion_resolved(built):
    _, out = built
    records = {r.record_id: r for rs in outputs(out).values() for r in rs}
    bcn = [r for r in records.values() if r.source == "bcn20000"]
    assert all(r.split == "test" for r in bcn if r.extra["build"]["source_split"] == "test")
    assert {r.split for r in bcn if r.extra["build"]["source_split"] == "train"} == {"train", "valid"}  # 75/25 carve
    removed = {r["record_id"]: r for r in map(json.loads, (out / "removed.jsonl").read_text().splitlines())}
    conflict = removed["bcn20000:BCN_0000000002"]  # lesion BCN_0000001: train image, its sibling is official test
    assert conflict["reason"] == "group_split_conflict" and conflict["related"] == "bcn20000:BCN_0000000003"
    assert records["bcn20000:BCN_0000000003"].split == "test"


def test_dense_sparse_and_test_files_by_label_granularity(built):
    report, out = built
    files, taxonomy = outputs(out), default_taxonomy()
    assert {r.source for r in files["dense.jsonl"]} == {"fitzpatrick17k", "pad-ufes-20"}
    assert all(taxonomy.depth(r.node_id) >= 3 for name in ("dense.jsonl", "test.jsonl") for r in files[name])
    assert files["test_sparse.jsonl"] and all(r.label_depth <= 2 for r in files["test_sparse.jsonl"])
    coarse = [r for r in files["sparse.jsonl"] if r.original_label.lower() == "akiec"]
    assert coarse and {r.node_id for r in coarse} == {"malignant_epidermal"}  # never guessed down to a leaf
    assert {r.split for r in files["dense.jsonl"] + files["sparse.jsonl"]} == {"train"}
    assert [r.source for r in files["test_ood_ddi.jsonl"]] == ["ddi"] * report["files"]["test_ood_ddi.jsonl"]["records"]
    assert report["ood_test_files"] == ["test_ood_ddi.jsonl"] and "test_ood_ddi.jsonl" in report["hint"]
    levels = report["files"]["test_sparse.jsonl"]["by_level"]
    assert sum(levels.values()) == len(files["test_sparse.jsonl"]) and set(levels) <= {"1", "2"}
    assert sum(report["files"]["dense.jsonl"]["by_fitzpatrick"].values()) == len(files["dense.jsonl"])


def test_build_is_deterministic(prepared, built, tmp_path):
    build(recipe(prepared[0]), tmp_path)
    for name in ("dense.jsonl", "sparse.jsonl", "valid.jsonl", "test.jsonl", "test_sparse.jsonl", "removed.jsonl"):
        assert (tmp_path / name).read_bytes() == (built[1] / name).read_bytes(), name


# ---------------------------------------------------------------------------------- refusals
def test_recipe_listing_a_dataset_in_and_out_of_domain_is_refused(prepared):
    with pytest.raises(BuildError, match="would leak.*ham10000"):
        recipe(prepared[0], out_of_domain=["ddi", "ham10000"])
    with pytest.raises(BuildError, match="would leak"):  # the same manifest under another name
        recipe(prepared[0], out_of_domain=[{"name": "ham_again", "manifest": "ham10000/manifest.jsonl"}])


def test_ood_set_sharing_an_isic_id_is_refused_or_dropped(prepared, tmp_path):
    leaky = recipe(prepared[0], out_of_domain=["ddi", "isic2020"])
    with pytest.raises(BuildError, match="would leak: 5 in-domain record.*ham10000:ISIC_0000001 ~ isic2020:ISIC_0000001"):
        build(leaky, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written
    report = build(recipe(prepared[0], out_of_domain=["ddi", "isic2020"], ood_overlap="drop_in_domain"), tmp_path / "dropped")
    # ISIC_0000001 (HAM10000) is the OOD image; ISIC_0000000 is the same lesion (HAM_0000000), in
    # HAM10000 and ISIC 2019, and byte-identical to BCN_0000000000, whose lesion has BCN_0000000001.
    linked = {"ham10000:ISIC_0000001", "ham10000:ISIC_0000000", "isic2019:ISIC_0000000",
              "bcn20000:BCN_0000000000", "bcn20000:BCN_0000000001"}
    assert report["removed"]["overlaps_ood"] == 5 and report["ood_overlap"]["by_dataset"] == {
        "ham10000 ~ isic2020": 2, "isic2019 ~ isic2020": 1, "bcn20000 ~ isic2020": 2}
    dropped = tmp_path / "dropped"
    removed = {r["record_id"] for r in map(json.loads, (dropped / "removed.jsonl").read_text().splitlines())
               if r["reason"] == "overlaps_ood"}
    kept = {r.record_id for p in dropped.glob("*.jsonl") if p.name != "removed.jsonl" for r in read_jsonl(p)}
    assert removed == linked and not linked & kept and "isic2020:ISIC_0000001" in kept


@pytest.mark.parametrize("values, message", [
    ({"in_domain": []}, "no dataset"),
    ({"in_domain": ["a"], "fractions": {"train": 0.5, "valid": 0.2, "test": 0.2}}, "summing to 1"),
    ({"in_domain": [{"name": "a", "train_set": "rl"}]}, "dense or sparse"),
    ({"in_domain": [{"name": "a b"}]}, "letters"),
    ({"in_domain": [{"name": "a", "colour": 1}]}, "unknown key"),
    ({"in_domain": ["a"], "ood_overlap": "ignore"}, "refuse or drop_in_domain"),
])
def test_bad_recipes_get_clear_errors(values, message):
    with pytest.raises(BuildError, match=message):
        Recipe(**values)


def test_unknown_split_name_and_missing_manifest_are_errors(prepared, tmp_path):
    with pytest.raises(BuildError, match="manifest not found"):
        build(Recipe(in_domain=["nope"], prepared_dir=str(prepared[0])), tmp_path)
    odd = tmp_path / "odd" / "manifest.jsonl"
    odd.parent.mkdir()
    record = read_jsonl(prepared[0] / "ham10000" / "manifest.jsonl")[0]
    odd.write_text(json.dumps({**record.to_dict(), "split": "holdout"}) + "\n")
    with pytest.raises(BuildError, match="holdout.*split_aliases"):
        build(Recipe(in_domain=[{"name": "odd", "manifest": str(odd)}]), tmp_path / "out")
    report = build(Recipe(in_domain=[DatasetSpec("odd", manifest=str(odd), split_aliases={"holdout": "test"})]),
                   tmp_path / "out")
    assert report["files"]["test.jsonl"]["records"] == 1


def test_cli_builds_from_a_yaml_recipe_and_refuses_leaks(prepared, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("in_domain:\n  - {name: fitzpatrick17k, train_set: dense}\n  - ham10000\nout_of_domain: [ddi]\nseed: 1\n")
    assert cli_main(["data", "build", "--recipe", str(path), "--prepared", str(prepared[0]), "--out", str(tmp_path / "o")]) == 0
    assert "test_ood_ddi.jsonl" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "report.json").read_text())["recipe"]["seed"] == 1
    path.write_text("in_domain: [ham10000]\nout_of_domain: [ham10000]\n")
    assert cli_main(["data", "build", "--recipe", str(path), "--prepared", str(prepared[0]), "--out", str(tmp_path / "x")]) == 2
    assert "would leak" in capsys.readouterr().err


def test_shipped_recipe_loads():
    shipped = Path(__file__).parents[1] / "skinr1" / "configs" / "recipes" / "paper_example.yaml"
    loaded = Recipe.from_yaml(shipped)
    assert [d.name for d in loaded.in_domain] and [d.name for d in loaded.out_of_domain]


# ------------------------------------------------------------------------------ performance
@pytest.mark.slow
def test_sixty_thousand_records_build_in_under_a_minute(tmp_path):
    sizes = prepare_pool(make_pool(tmp_path / "raw", 10_300), tmp_path / "prepared")
    rows = sum(n for name, n in sizes.items() if name != "isic2020")
    assert rows >= 60_000
    started = time.perf_counter()
    report = build(recipe(tmp_path / "prepared"), tmp_path / "out")
    elapsed = time.perf_counter() - started
    assert elapsed < 60, elapsed
    assert report["rows"] == rows and report["all_rows_accounted"]
    written = sum(1 for p in (tmp_path / "out").glob("*.jsonl") for _ in open(p))
    assert written == rows  # every row is in one split file or in removed.jsonl
    print(f"\n{rows} rows built in {elapsed:.1f} s")
