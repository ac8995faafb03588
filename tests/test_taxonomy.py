"""The disease taxonomy: loader validation, tree queries, label maps of every source, the CLI.

Fast and self-contained (no Ray, no model): the Fitzpatrick17k hierarchy is embedded below and
cross-checked against the shared copy of the dataset when that copy exists on this machine.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from skinr1.cli import main
from skinr1.pipeline.harmonization import find_fitzpatrick_csv
from skinr1.taxonomy import (
    DEFAULT_LABEL_MAPS_PATH,
    DEFAULT_TAXONOMY_PATH,
    SOURCES,
    LabelResolver,
    Node,
    Taxonomy,
    TaxonomyError,
    default_resolver,
    load_resolver,
    normalize_label,
)

SHARED_FITZPATRICK = (find_fitzpatrick_csv() or Path("/nonexistent/fitzpatrick17k.csv")).parent

# Fitzpatrick17k: three_partition_label > nine_partition_label > label (114 labels).
FITZPATRICK_TREE = {
    "benign": {
        "benign dermal": (
            "becker nevus", "dermatofibroma", "fordyce spots", "granuloma pyogenic", "lymphangioma",
            "mucous cyst", "pilar cyst", "pilomatricoma", "port wine stain", "pyogenic granuloma",
            "syringoma", "telangiectases",
        ),
        "benign epidermal": (
            "disseminated actinic porokeratosis", "epidermal nevus", "milia", "naevus comedonicus",
            "nevus sebaceous of jadassohn", "porokeratosis actinic", "porokeratosis of mibelli",
            "prurigo nodularis", "seborrheic keratosis",
        ),
        "benign melanocyte": (
            "congenital nevus", "halo nevus", "nevocytic nevus",
        ),
    },
    "malignant": {
        "malignant cutaneous lymphoma": (
            "mycosis fungoides",
        ),
        "malignant dermal": (
            "kaposi sarcoma",
        ),
        "malignant epidermal": (
            "actinic keratosis", "basal cell carcinoma", "basal cell carcinoma morpheiform",
            "solid cystic basal cell carcinoma", "squamous cell carcinoma",
        ),
        "malignant melanoma": (
            "lentigo maligna", "malignant melanoma", "melanoma", "superficial spreading melanoma ssm",
        ),
    },
    "non-neoplastic": {
        "genodermatoses": (
            "acrodermatitis enteropathica", "dariers disease", "ehlers danlos syndrome",
            "epidermolysis bullosa", "hailey hailey disease", "ichthyosis vulgaris",
            "incontinentia pigmenti", "neurofibromatosis", "tuberous sclerosis",
            "xeroderma pigmentosum",
        ),
        "inflammatory": (
            "acanthosis nigricans", "acne", "acne vulgaris",
            "acquired autoimmune bullous diseaseherpes gestationis", "allergic contact dermatitis",
            "aplasia cutis", "behcets disease", "calcinosis cutis", "cheilitis", "dermatomyositis",
            "drug eruption", "drug induced pigmentary changes", "dyshidrotic eczema", "eczema",
            "erythema annulare centrifigum", "erythema elevatum diutinum", "erythema multiforme",
            "erythema nodosum", "factitial dermatitis", "fixed eruptions", "folliculitis",
            "granuloma annulare", "hidradenitis", "juvenile xanthogranuloma", "keloid",
            "keratosis pilaris", "langerhans cell histiocytosis", "lichen amyloidosis", "lichen planus",
            "lichen simplex", "livedo reticularis", "lupus erythematosus", "lupus subacute",
            "lyme disease", "mucinosis", "myiasis", "necrobiosis lipoidica", "nematode infection",
            "neurodermatitis", "neurotic excoriations", "neutrophilic dermatoses",
            "papilomatosis confluentes and reticulate", "paronychia", "pediculosis lids",
            "perioral dermatitis", "photodermatoses", "pityriasis lichenoides chronica",
            "pityriasis rosea", "pityriasis rubra pilaris", "porphyria", "psoriasis",
            "pustular psoriasis", "rhinophyma", "rosacea", "sarcoidosis", "scabies", "scleroderma",
            "scleromyxedema", "seborrheic dermatitis", "stasis edema", "stevens johnson syndrome",
            "striae", "sun damaged skin", "tick bite", "tungiasis", "urticaria", "urticaria pigmentosa",
            "vitiligo", "xanthomas",
        ),
    },
}


# The synthetic demo's eight diseases; their ids are used across the code base.
DEMO_NODES = (
    "melanoma",
    "melanocytic_nevus",
    "basal_cell_carcinoma",
    "squamous_cell_carcinoma",
    "seborrheic_keratosis",
    "dermatofibroma",
    "psoriasis",
    "vitiligo",
)


@pytest.fixture(scope="module")
def resolver() -> LabelResolver:
    return load_resolver()


@pytest.fixture(scope="module")
def taxonomy(resolver) -> Taxonomy:
    return resolver.taxonomy


def fitzpatrick_labels():
    for three, groups in FITZPATRICK_TREE.items():
        for nine, labels in groups.items():
            for label in labels:
                yield three, nine, label


# ------------------------------------------------------------------------------------ loader
def _node(node_id, parent=None, malignancy="benign", synonyms=(), ddx=(), children=(), name=None):
    return Node(
        id=node_id,
        name=name or node_id.replace("_", " "),
        parent=parent,
        malignancy=malignancy,
        synonyms=tuple(synonyms),
        ddx=tuple(ddx),
        children=tuple(children),
    )


def test_from_nodes_accepts_a_small_valid_tree():
    tree = Taxonomy.from_nodes(
        [
            _node("root", children=("a", "b")),
            _node("a", parent="root", synonyms=("alpha",), ddx=("b",)),
            _node("b", parent="root"),
        ]
    )
    assert tree.find("Alpha") == "a"
    assert tree.lca("a", "b") == "root"


def test_duplicate_id_is_rejected():
    with pytest.raises(TaxonomyError, match="duplicate node id"):
        Taxonomy.from_nodes([_node("root"), _node("root")])


def test_duplicate_synonym_is_rejected_after_normalisation():
    nodes = [
        _node("root", children=("a", "b")),
        _node("a", parent="root", synonyms=("Basal-Cell Carcinoma",)),
        _node("b", parent="root", synonyms=("basal cell carcinoma",)),
    ]
    with pytest.raises(TaxonomyError, match="used by both"):
        Taxonomy.from_nodes(nodes)


def test_synonym_equal_to_another_nodes_name_is_rejected():
    nodes = [_node("root", children=("a", "b")), _node("a", parent="root"), _node("b", parent="root", synonyms=("A",))]
    with pytest.raises(TaxonomyError):
        Taxonomy.from_nodes(nodes)


def test_cycle_is_rejected():
    nodes = [_node("a", parent="c"), _node("b", parent="a"), _node("c", parent="b")]
    with pytest.raises(TaxonomyError, match="cycle"):
        Taxonomy.from_nodes(nodes)


def test_unknown_ddx_reference_is_rejected():
    with pytest.raises(TaxonomyError, match="unknown DDx"):
        Taxonomy.from_nodes([_node("root", ddx=("nowhere",))])


def test_self_ddx_is_rejected():
    with pytest.raises(TaxonomyError, match="itself"):
        Taxonomy.from_nodes([_node("root", ddx=("root",))])


def test_unknown_parent_and_bad_malignancy_are_rejected():
    with pytest.raises(TaxonomyError, match="unknown parent"):
        Taxonomy.from_nodes([_node("a", parent="ghost")])
    with pytest.raises(TaxonomyError, match="malignancy"):
        Taxonomy.from_nodes([_node("a", malignancy="evil")])


def test_yaml_top_level_node_needs_malignancy(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("nodes:\n  - id: top\n    children:\n      - id: leaf\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="needs a 'malignancy'"):
        Taxonomy.from_yaml(path)
    path.write_text("nodes:\n  - id: top\n    malignancy: benign\n    children:\n      - id: leaf\n", encoding="utf-8")
    tree = Taxonomy.from_yaml(path)
    assert tree.malignancy("leaf") == "benign"  # inherited


def test_label_map_to_unknown_node_is_rejected(tmp_path, taxonomy):
    path = tmp_path / "maps.yaml"
    path.write_text("sources:\n  ham10000:\n    labels:\n      mel: no_such_node\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="unknown node"):
        LabelResolver.from_yaml(taxonomy, path)


def test_label_map_colliding_keys_are_rejected(tmp_path, taxonomy):
    path = tmp_path / "maps.yaml"
    path.write_text(
        "sources:\n  derm7pt:\n    labels:\n      melanoma (in situ): melanoma_in_situ\n"
        "      melanoma in-situ: melanoma\n",
        encoding="utf-8",
    )
    with pytest.raises(TaxonomyError, match="mapped twice"):
        LabelResolver.from_yaml(taxonomy, path)


# ------------------------------------------------------------------------------ shipped tree
def test_shipped_tree_loads_with_three_top_level_categories(taxonomy):
    assert DEFAULT_TAXONOMY_PATH.exists() and DEFAULT_LABEL_MAPS_PATH.exists()
    assert [r.id for r in taxonomy.roots()] == ["benign", "malignant", "non_neoplastic"]
    assert [r.name for r in taxonomy.roots()] == ["benign", "malignant", "non-neoplastic"]
    assert [taxonomy.malignancy(r.id) for r in taxonomy.roots()] == ["benign", "malignant", "non-neoplastic"]
    assert len(taxonomy) > 200
    assert len(taxonomy.leaves()) > 150


def test_groups_are_fitzpatricks_nine_partitions(taxonomy):
    groups = {n.name: n.id for n in taxonomy.nodes.values() if taxonomy.depth(n.id) == 2}
    assert groups == {
        "benign dermal": "benign_dermal",
        "benign epidermal": "benign_epidermal",
        "benign melanocyte": "benign_melanocyte",
        "malignant cutaneous lymphoma": "malignant_cutaneous_lymphoma",
        "malignant dermal": "malignant_dermal",
        "malignant epidermal": "malignant_epidermal",
        "malignant melanoma": "malignant_melanoma",
        "genodermatoses": "genodermatoses",
        "inflammatory": "inflammatory",
    }
    for three, groups_of in FITZPATRICK_TREE.items():
        for nine in groups_of:
            assert taxonomy.path_names(groups[nine]) == [three, nine]


def test_every_leaf_is_reachable_from_a_root(taxonomy):
    reachable = set()
    for root in taxonomy.roots():
        reachable.add(root.id)
        reachable.update(taxonomy.descendants(root.id))
    assert reachable == set(taxonomy.nodes)
    for leaf in taxonomy.leaves():
        assert taxonomy.path(leaf.id)[0] in {"benign", "malignant", "non_neoplastic"}
        assert taxonomy.depth(leaf.id) >= 3


def test_ids_are_snake_case_and_descriptions_present(taxonomy):
    for node in taxonomy.nodes.values():
        assert node.id == node.id.lower() and " " not in node.id and "-" not in node.id, node.id
        assert node.description and "\n" not in node.description, node.id
        for name in (node.name, *node.synonyms):
            assert normalize_label(name), (node.id, name)


def test_fixed_node_ids_and_places(taxonomy):
    assert taxonomy.path_names("melanoma") == ["malignant", "malignant melanoma", "melanoma"]
    assert taxonomy.depth("melanoma") == 3
    expected_groups = {
        "melanocytic_nevus": ["benign", "benign melanocyte"],
        "basal_cell_carcinoma": ["malignant", "malignant epidermal"],
        "squamous_cell_carcinoma": ["malignant", "malignant epidermal"],
        "actinic_keratosis": ["malignant", "malignant epidermal"],
        "seborrheic_keratosis": ["benign", "benign epidermal"],
        "dermatofibroma": ["benign", "benign dermal"],
        "psoriasis": ["non-neoplastic", "inflammatory"],
        "vitiligo": ["non-neoplastic", "inflammatory"],
        "eczema": ["non-neoplastic", "inflammatory"],
    }
    for node_id, prefix in expected_groups.items():
        assert taxonomy.path_names(node_id)[:2] == prefix, node_id
    assert taxonomy.node("melanocytic_nevus").name == "melanocytic nevus"
    for text in ("nevocytic nevus", "nevus", "mole", "melanocytic nevi", "Melanocytic Naevi"):
        assert taxonomy.find(text) == "melanocytic_nevus", text


def test_path_depth_lca_siblings_on_examples(taxonomy):
    assert taxonomy.path("lentigo_maligna") == [
        "malignant", "malignant_melanoma", "melanoma", "melanoma_in_situ", "lentigo_maligna"
    ]
    assert taxonomy.depth("benign") == 1 and taxonomy.depth("benign_dermal") == 2
    assert taxonomy.depth("pyogenic_granuloma") == 4  # benign > benign dermal > vascular lesion > ...
    assert taxonomy.lca("basal_cell_carcinoma", "squamous_cell_carcinoma") == "malignant_epidermal"
    assert taxonomy.lca("melanoma", "basal_cell_carcinoma") == "malignant"
    assert taxonomy.lca("melanoma", "melanocytic_nevus") is None  # different top-level categories
    assert taxonomy.lca("superficial_spreading_melanoma", "lentigo_maligna") == "melanoma"
    assert taxonomy.lca("pustular_psoriasis", "psoriasis") == "psoriasis"
    assert set(taxonomy.siblings("benign")) == {"malignant", "non_neoplastic"}
    assert "squamous_cell_carcinoma" in taxonomy.siblings("basal_cell_carcinoma")
    assert "actinic_keratosis" in taxonomy.siblings("basal_cell_carcinoma")
    assert "basal_cell_carcinoma" not in taxonomy.siblings("basal_cell_carcinoma")
    assert taxonomy.is_ancestor("melanocytic_nevus", "halo_nevus")
    assert taxonomy.ancestor_at_depth("reed_nevus", 3) == "melanocytic_nevus"


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        ("acne_vulgaris", "acne"),
        ("pustular_psoriasis", "psoriasis"),
        ("subacute_cutaneous_lupus_erythematosus", "lupus_erythematosus"),
        ("dyshidrotic_eczema", "eczema"),
        ("lentigo_maligna", "melanoma"),
        ("superficial_spreading_melanoma", "melanoma"),
        ("morpheaform_basal_cell_carcinoma", "basal_cell_carcinoma"),
        ("solid_cystic_basal_cell_carcinoma", "basal_cell_carcinoma"),
        ("congenital_nevus", "melanocytic_nevus"),
        ("halo_nevus", "melanocytic_nevus"),
        ("rhinophyma", "rosacea"),
        ("fixed_drug_eruption", "drug_eruption"),
        ("scleromyxedema", "mucinosis"),
        ("pyogenic_granuloma", "vascular_lesion"),
        ("port_wine_stain", "vascular_lesion"),
        ("squamous_cell_carcinoma_in_situ", "squamous_cell_carcinoma"),
        ("keratoacanthoma", "squamous_cell_carcinoma"),
        ("seborrheic_keratosis", "benign_keratosis"),
        ("solar_lentigo", "benign_keratosis"),
        ("mycosis_fungoides", "malignant_cutaneous_lymphoma"),
        ("verruca_vulgaris", "wart"),
        ("keloid", "scar"),
        ("morphea", "scleroderma"),
    ],
)
def test_subtypes_sit_under_their_parent_disease(taxonomy, child, parent):
    assert taxonomy.is_ancestor(parent, child) and child != parent


@pytest.mark.parametrize(
    ("node_id", "malignancy"),
    [
        ("actinic_keratosis", "precancerous"),
        ("squamous_cell_carcinoma_in_situ", "malignant"),
        ("squamous_cell_carcinoma", "malignant"),
        ("basal_cell_carcinoma", "malignant"),
        ("mycosis_fungoides", "malignant"),
        ("melanoma_in_situ", "malignant"),
        ("kaposi_sarcoma", "malignant"),
        ("melanocytic_nevus", "benign"),
        ("dysplastic_nevus", "benign"),
        ("seborrheic_keratosis", "benign"),
        ("dermatofibroma", "benign"),
        ("psoriasis", "non-neoplastic"),
        ("vitiligo", "non-neoplastic"),
        ("wart", "non-neoplastic"),
        ("xeroderma_pigmentosum", "non-neoplastic"),
    ],
)
def test_malignancy_by_medical_meaning(taxonomy, node_id, malignancy):
    assert taxonomy.malignancy(node_id) == malignancy


def test_malignancy_is_consistent_with_the_top_level(taxonomy):
    """Only actinic keratosis departs from its top-level category (a precursor filed as malignant)."""
    departures = {
        n.id for n in taxonomy.nodes.values()
        if n.malignancy != taxonomy.malignancy(taxonomy.path(n.id)[0])
    }
    assert departures == {"actinic_keratosis"}


def test_demo_nodes_have_medically_sensible_ddx(taxonomy):
    for node_id in DEMO_NODES:
        ddx = taxonomy.ddx(node_id)
        assert len(ddx) >= 3, node_id
        for other in ddx:  # never an ancestor or a descendant
            assert not taxonomy.is_ancestor(node_id, other) and not taxonomy.is_ancestor(other, node_id)
    assert "melanocytic_nevus" in taxonomy.ddx("melanoma")
    assert "seborrheic_keratosis" in taxonomy.ddx("melanoma")
    assert "melanoma" in taxonomy.ddx("melanocytic_nevus")
    assert {"squamous_cell_carcinoma", "actinic_keratosis"} <= set(taxonomy.ddx("basal_cell_carcinoma"))
    assert {"basal_cell_carcinoma", "actinic_keratosis"} <= set(taxonomy.ddx("squamous_cell_carcinoma"))
    assert {"melanoma", "melanocytic_nevus"} <= set(taxonomy.ddx("seborrheic_keratosis"))
    assert {"eczema", "lichen_planus"} <= set(taxonomy.ddx("psoriasis"))
    assert "psoriasis" in taxonomy.ddx("eczema")
    assert "melanocytic_nevus" in taxonomy.ddx("dermatofibroma")
    assert {"pityriasis_alba", "tinea_versicolor"} <= set(taxonomy.ddx("vitiligo"))


def test_most_nodes_below_the_groups_declare_ddx(taxonomy):
    deep = [n for n in taxonomy.nodes.values() if taxonomy.depth(n.id) >= 3]
    assert all(n.ddx for n in deep), [n.id for n in deep if not n.ddx]


def test_free_text_names_synonyms_and_abbreviations(taxonomy):
    cases = {
        "Basal-Cell_Carcinoma": "basal_cell_carcinoma",
        "the basal cell carcinomas": "basal_cell_carcinoma",
        "BCC": "basal_cell_carcinoma",
        "SCC": "squamous_cell_carcinoma",
        "Bowen's disease": "squamous_cell_carcinoma_in_situ",
        "MF": "mycosis_fungoides",
        "SK": "seborrheic_keratosis",
        "AK": "actinic_keratosis",
        "actinic keratoses": "actinic_keratosis",
        "granuloma pyogenic": "pyogenic_granuloma",
        "porokeratosis actinic": "disseminated_actinic_porokeratosis",
        "lichen simplex": "lichen_simplex_chronicus",
        "neurodermatitis": "lichen_simplex_chronicus",
        "telangiectases": "telangiectasia",
        "Darier's disease": "darier_disease",
        "pompholyx": "dyshidrotic_eczema",
        "athlete's foot": "tinea_pedis",
        "malignant melanoma": "melanoma",  # the group's name means the disease (name_means)
    }
    for text, node_id in cases.items():
        assert taxonomy.find(text) == node_id, text
    assert taxonomy.find("not a disease") is None


# ---------------------------------------------------------------------------- label maps
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
