"""Label maps: every source's vocabulary resolves onto the shipped taxonomy (Fitzpatrick17k's 114
labels with their partitions, the other datasets' labels, reasons for what stays unmapped) and the
`skinr1 taxonomy` CLI. Fast and self-contained (no Ray, no model)."""

from __future__ import annotations

import csv
import json

import pytest

from fitzpatrick_tree import FITZPATRICK_TREE, SHARED_FITZPATRICK, fitzpatrick_labels
from skinr1.cli import main
from skinr1.taxonomy import SOURCES, default_resolver, normalize_label


def test_every_source_has_a_vocabulary(resolver):
    assert set(resolver.vocabularies) == set(SOURCES)


def test_all_fitzpatrick_labels_resolve_with_matching_partitions(resolver, taxonomy):
    labels = list(fitzpatrick_labels())
    assert len(labels) == 114
    for three, nine, label in labels:
        hit = resolver.resolve(label, source="fitzpatrick17k")
        assert hit.mapped, label
        assert hit.matched_by == "source_map", label
        assert taxonomy.path_names(hit.node_id)[:2] == [three, nine], (label, hit.node_id)


def test_fitzpatrick_spelling_variants_merge_onto_one_node(resolver):
    pairs = [
        ("granuloma pyogenic", "pyogenic granuloma"),
        ("porokeratosis actinic", "disseminated actinic porokeratosis"),
        ("lichen simplex", "neurodermatitis"),
        ("malignant melanoma", "melanoma"),
    ]
    for a, b in pairs:
        assert resolver.resolve(a, "fitzpatrick17k").node_id == resolver.resolve(b, "fitzpatrick17k").node_id


@pytest.mark.skipif(not (SHARED_FITZPATRICK / "hierarchy.json").exists(), reason="shared Fitzpatrick17k copy absent")
def test_embedded_hierarchy_matches_the_shared_file():
    shipped = json.loads((SHARED_FITZPATRICK / "hierarchy.json").read_text(encoding="utf-8"))["tree"]
    assert {k: {g: tuple(v) for g, v in groups.items()} for k, groups in shipped.items()} == FITZPATRICK_TREE


@pytest.mark.skipif(not (SHARED_FITZPATRICK / "fitzpatrick17k.csv").exists(), reason="shared Fitzpatrick17k copy absent")
def test_every_fitzpatrick_csv_row_maps_with_matching_path(resolver, taxonomy):
    with open(SHARED_FITZPATRICK / "fitzpatrick17k.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16577
    paths: dict[str, list[str]] = {}
    for row in rows:
        label = row["label"]
        if label not in paths:
            hit = resolver.resolve(label, source="fitzpatrick17k")
            assert hit.mapped, label
            paths[label] = taxonomy.path_names(hit.node_id)
        assert paths[label][:2] == [row["three_partition_label"], row["nine_partition_label"]], label


# (source, original label, expected node id, expected first path names)
RESOLVE_CASES = [
    # HAM10000 dx codes
    ("ham10000", "mel", "melanoma", ["malignant", "malignant melanoma", "melanoma"]),
    ("ham10000", "nv", "melanocytic_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("ham10000", "bcc", "basal_cell_carcinoma", ["malignant", "malignant epidermal", "basal cell carcinoma"]),
    ("ham10000", "akiec", "malignant_epidermal", ["malignant", "malignant epidermal"]),
    ("ham10000", "bkl", "benign_keratosis", ["benign", "benign epidermal", "benign keratosis"]),
    ("ham10000", "df", "dermatofibroma", ["benign", "benign dermal", "dermatofibroma"]),
    ("ham10000", "vasc", "vascular_lesion", ["benign", "benign dermal", "vascular lesion"]),
    ("ham10000", "Melanocytic nevi", "melanocytic_nevus", ["benign", "benign melanocyte"]),
    ("ham10000", "Benign keratosis-like lesions", "benign_keratosis", ["benign", "benign epidermal"]),
    # ISIC 2019
    ("isic2019", "MEL", "melanoma", ["malignant", "malignant melanoma"]),
    ("isic2019", "NV", "melanocytic_nevus", ["benign", "benign melanocyte"]),
    ("isic2019", "BCC", "basal_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("isic2019", "AK", "actinic_keratosis", ["malignant", "malignant epidermal"]),
    ("isic2019", "BKL", "benign_keratosis", ["benign", "benign epidermal"]),
    ("isic2019", "DF", "dermatofibroma", ["benign", "benign dermal"]),
    ("isic2019", "VASC", "vascular_lesion", ["benign", "benign dermal"]),
    ("isic2019", "SCC", "squamous_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("isic2019", "benign keratosis", "benign_keratosis", ["benign", "benign epidermal"]),
    ("isic2019", "vascular lesion", "vascular_lesion", ["benign", "benign dermal"]),
    ("isic2019", "Melanoma in situ", "melanoma_in_situ", ["malignant", "malignant melanoma", "melanoma"]),
    ("isic2019", "Benign melanocytic proliferations", "benign_melanocyte", ["benign", "benign melanocyte"]),
    # BCN20000
    ("bcn20000", "MEL", "melanoma", ["malignant", "malignant melanoma"]),
    ("bcn20000", "NV", "melanocytic_nevus", ["benign", "benign melanocyte"]),
    ("bcn20000", "BKL", "benign_keratosis", ["benign", "benign epidermal"]),
    ("bcn20000", "SCC", "squamous_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("bcn20000", "actinic keratosis", "actinic_keratosis", ["malignant", "malignant epidermal"]),
    ("bcn20000", "solar lentigo", "solar_lentigo", ["benign", "benign epidermal", "benign keratosis"]),
    # PAD-UFES-20
    ("pad-ufes-20", "ACK", "actinic_keratosis", ["malignant", "malignant epidermal"]),
    ("pad-ufes-20", "BCC", "basal_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("pad-ufes-20", "MEL", "melanoma", ["malignant", "malignant melanoma"]),
    ("pad-ufes-20", "NEV", "melanocytic_nevus", ["benign", "benign melanocyte"]),
    ("pad-ufes-20", "SCC", "squamous_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("pad-ufes-20", "SEK", "seborrheic_keratosis", ["benign", "benign epidermal"]),
    # DDI
    ("ddi", "melanoma-in-situ", "melanoma_in_situ", ["malignant", "malignant melanoma", "melanoma", "melanoma in situ"]),
    ("ddi", "melanoma-acral-lentiginous", "acral_lentiginous_melanoma", ["malignant", "malignant melanoma", "melanoma"]),
    ("ddi", "nodular-melanoma-(nm)", "nodular_melanoma", ["malignant", "malignant melanoma", "melanoma"]),
    ("ddi", "mycosis-fungoides", "mycosis_fungoides", ["malignant", "malignant cutaneous lymphoma"]),
    ("ddi", "subcutaneous-t-cell-lymphoma", "subcutaneous_panniculitis_like_t_cell_lymphoma", ["malignant", "malignant cutaneous lymphoma"]),
    ("ddi", "squamous-cell-carcinoma-in-situ", "squamous_cell_carcinoma_in_situ", ["malignant", "malignant epidermal", "squamous cell carcinoma"]),
    ("ddi", "squamous-cell-carcinoma-keratoacanthoma", "keratoacanthoma", ["malignant", "malignant epidermal", "squamous cell carcinoma"]),
    ("ddi", "basal-cell-carcinoma-nodular", "nodular_basal_cell_carcinoma", ["malignant", "malignant epidermal", "basal cell carcinoma"]),
    ("ddi", "basal-cell-carcinoma-superficial", "superficial_basal_cell_carcinoma", ["malignant", "malignant epidermal", "basal cell carcinoma"]),
    ("ddi", "seborrheic-keratosis-irritated", "irritated_seborrheic_keratosis", ["benign", "benign epidermal"]),
    ("ddi", "verruca-vulgaris", "verruca_vulgaris", ["non-neoplastic", "inflammatory"]),
    ("ddi", "wart", "wart", ["non-neoplastic", "inflammatory"]),
    ("ddi", "epidermal-cyst", "epidermal_cyst", ["benign", "benign epidermal"]),
    ("ddi", "lipoma", "lipoma", ["benign", "benign dermal"]),
    ("ddi", "acrochordon", "acrochordon", ["benign", "benign dermal"]),
    ("ddi", "abscess", "abscess", ["non-neoplastic", "inflammatory"]),
    ("ddi", "angioma", "hemangioma", ["benign", "benign dermal", "vascular lesion"]),
    ("ddi", "blue-nevus", "blue_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("ddi", "dysplastic-nevus", "dysplastic_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("ddi", "melanocytic-nevi", "melanocytic_nevus", ["benign", "benign melanocyte"]),
    ("ddi", "eccrine-poroma", "eccrine_poroma", ["benign", "benign dermal"]),
    ("ddi", "molluscum-contagiosum", "molluscum_contagiosum", ["non-neoplastic", "inflammatory"]),
    ("ddi", "onychomycosis", "onychomycosis", ["non-neoplastic", "inflammatory"]),
    ("ddi", "tinea-pedis", "tinea_pedis", ["non-neoplastic", "inflammatory"]),
    ("ddi", "keloid", "keloid", ["non-neoplastic", "inflammatory"]),
    ("ddi", "scar", "scar", ["non-neoplastic", "inflammatory"]),
    ("ddi", "hematoma", "hematoma", ["non-neoplastic", "inflammatory"]),
    ("ddi", "kaposi-sarcoma", "kaposi_sarcoma", ["malignant", "malignant dermal"]),
    ("ddi", "sebaceous-carcinoma", "sebaceous_carcinoma", ["malignant", "malignant dermal"]),
    ("ddi", "leukemia-cutis", "leukemia_cutis", ["malignant", "malignant cutaneous lymphoma"]),
    ("ddi", "metastatic-carcinoma", "metastatic_carcinoma", ["malignant", "malignant dermal"]),
    ("ddi", "neurofibroma", "neurofibroma", ["benign", "benign dermal"]),
    ("ddi", "prurigo-nodularis", "prurigo_nodularis", ["benign", "benign epidermal"]),
    ("ddi", "pigmented-spindle-cell-nevus-of-reed", "reed_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("ddi", "acral-melanotic-macule", "acral_melanotic_macule", ["benign", "benign melanocyte"]),
    ("ddi", "verruciform-xanthoma", "verruciform_xanthoma", ["non-neoplastic", "inflammatory"]),
    ("ddi", "abrasions-ulcerations-and-physical-injuries", "skin_injury", ["non-neoplastic", "inflammatory"]),
    ("ddi", "benign-keratosis", "benign_keratosis", ["benign", "benign epidermal"]),
    ("ddi", "blastic-plasmacytoid-dendritic-cell-neoplasm", "blastic_plasmacytoid_dendritic_cell_neoplasm", ["malignant", "malignant cutaneous lymphoma"]),
    # derm7pt
    ("derm7pt", "basal cell carcinoma", "basal_cell_carcinoma", ["malignant", "malignant epidermal"]),
    ("derm7pt", "blue nevus", "blue_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "clark nevus", "dysplastic_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "combined nevus", "combined_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "congenital nevus", "congenital_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "dermal nevus", "dermal_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "recurrent nevus", "recurrent_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "reed or spitz nevus", "spitz_nevus", ["benign", "benign melanocyte", "melanocytic nevus"]),
    ("derm7pt", "dermatofibroma", "dermatofibroma", ["benign", "benign dermal"]),
    ("derm7pt", "lentigo", "lentigo", ["benign", "benign melanocyte"]),
    ("derm7pt", "melanoma", "melanoma", ["malignant", "malignant melanoma"]),
    ("derm7pt", "melanoma (in situ)", "melanoma_in_situ", ["malignant", "malignant melanoma", "melanoma"]),
    ("derm7pt", "melanoma (less than 0.76 mm)", "melanoma", ["malignant", "malignant melanoma"]),
    ("derm7pt", "melanoma (0.76 to 1.5 mm)", "melanoma", ["malignant", "malignant melanoma"]),
    ("derm7pt", "melanoma (more than 1.5 mm)", "melanoma", ["malignant", "malignant melanoma"]),
    ("derm7pt", "melanoma metastasis", "melanoma_metastasis", ["malignant", "malignant melanoma", "melanoma"]),
    ("derm7pt", "melanosis", "melanotic_macule", ["benign", "benign melanocyte"]),
    ("derm7pt", "seborrheic keratosis", "seborrheic_keratosis", ["benign", "benign epidermal"]),
    ("derm7pt", "vascular lesion", "vascular_lesion", ["benign", "benign dermal"]),
    # Fitzpatrick17k (a few; all 114 are checked above)
    ("fitzpatrick17k", "malignant melanoma", "melanoma", ["malignant", "malignant melanoma", "melanoma"]),
    ("fitzpatrick17k", "lupus subacute", "subacute_cutaneous_lupus_erythematosus", ["non-neoplastic", "inflammatory", "lupus erythematosus"]),
    ("fitzpatrick17k", "fixed eruptions", "fixed_drug_eruption", ["non-neoplastic", "inflammatory", "drug eruption"]),
]


@pytest.mark.parametrize(("source", "label", "node_id", "prefix"), RESOLVE_CASES)
def test_resolve_dataset_labels(resolver, taxonomy, source, label, node_id, prefix):
    hit = resolver.resolve(label, source=source)
    assert hit.node_id == node_id, (source, label, hit)
    assert taxonomy.path_names(hit.node_id)[: len(prefix)] == prefix


def test_source_names_are_canonicalised(resolver):
    assert resolver.resolve("SEK", source="PAD-UFES-20").node_id == "seborrheic_keratosis"
    assert resolver.resolve("mel", source="HAM10000").node_id == "melanoma"
    with pytest.raises(ValueError):
        resolver.resolve("mel", source="imagenet")


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("isic2019", "UNK"),
        ("bcn20000", "UNK"),
        ("derm7pt", "miscellaneous"),
        ("isic2019", "atypical melanocytic proliferation"),
        ("ham10000", "not a disease"),
        (None, "not a disease"),
        ("ddi", ""),
    ],
)
def test_unmapped_labels_give_a_reason(resolver, source, label):
    hit = resolver.resolve(label, source=source)
    assert not hit.mapped and hit.node_id is None
    assert hit.reason


def test_unmapped_reasons_come_from_the_vocabulary(resolver):
    assert "UNK" in resolver.resolve("UNK", source="isic2019").reason
    assert "miscellaneous" in resolver.resolve("miscellaneous", source="derm7pt").reason
    assert "not in" in resolver.resolve("not a disease", source="ham10000").reason


def test_every_ddi_disease_is_mapped(resolver):
    ddi = resolver.vocabularies["ddi"]
    assert len(ddi.labels) >= 78 and not ddi.unmapped


def test_every_derm7pt_diagnosis_is_mapped_or_deliberately_unmapped(resolver):
    diagnoses = [
        "basal cell carcinoma", "blue nevus", "clark nevus", "combined nevus", "congenital nevus",
        "dermal nevus", "dermatofibroma", "lentigo", "melanoma", "melanoma (in situ)",
        "melanoma (less than 0.76 mm)", "melanoma (0.76 to 1.5 mm)", "melanoma (more than 1.5 mm)",
        "melanoma metastasis", "melanosis", "miscellaneous", "recurrent nevus", "reed or spitz nevus",
        "seborrheic keratosis", "vascular lesion",
    ]
    keys = {normalize_label(d) for d in diagnoses}
    assert len(keys) == len(diagnoses)  # no two raw labels collide after normalisation
    vocab = resolver.vocabularies["derm7pt"]
    for diagnosis in diagnoses:
        key = normalize_label(diagnosis)
        assert (key in vocab.labels) != (key in vocab.unmapped), diagnosis


def test_label_maps_point_at_nodes_and_default_resolver_is_the_shipped_one(resolver):
    assert default_resolver().taxonomy.nodes.keys() == resolver.taxonomy.nodes.keys()
    for vocab in resolver.vocabularies.values():
        for node_id in vocab.labels.values():
            assert node_id in resolver.taxonomy


# ------------------------------------------------------------------------------------- CLI
def test_cli_resolve_prints_json_and_returns_zero(capsys):
    assert main(["taxonomy", "resolve", "--source", "ham10000", "mel"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        '{"input": "mel", "source": "ham10000", "node_id": "melanoma", '
        '"path": ["malignant", "malignant melanoma", "melanoma"], "depth": 3, "malignancy": "malignant"}'
    )


def test_cli_resolve_joins_words(capsys):
    assert main(["taxonomy", "resolve", "--source", "derm7pt", "reed", "or", "spitz", "nevus"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["node_id"] == "spitz_nevus" and payload["depth"] == 4


def test_cli_resolve_unmapped_returns_three(capsys):
    assert main(["taxonomy", "resolve", "--source", "isic2019", "UNK"]) == 3
    payload = json.loads(capsys.readouterr().out)
    assert payload["node_id"] is None and payload["reason"]
    assert main(["taxonomy", "resolve", "not", "a", "disease"]) == 3
    assert json.loads(capsys.readouterr().out)["node_id"] is None


def test_cli_show_prints_the_tree(capsys):
    assert main(["taxonomy", "show"]) == 0
    out = capsys.readouterr().out
    assert "malignant melanoma (malignant_melanoma)" in out
    assert "nodes," in out and "leaves" in out
