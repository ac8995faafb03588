"""The disease taxonomy: loader validation and tree queries on the shipped tree (the label maps
are in test_label_maps.py). Fast and self-contained (no Ray, no model)."""

from __future__ import annotations

import pytest

from fitzpatrick_tree import FITZPATRICK_TREE
from skinr1.taxonomy import (
    DEFAULT_LABEL_MAPS_PATH,
    DEFAULT_TAXONOMY_PATH,
    LabelResolver,
    Node,
    Taxonomy,
    TaxonomyError,
    normalize_label,
)


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
