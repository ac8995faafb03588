"""Group names that are also disease names: free text must resolve as a clinician means it.

Fitzpatrick17k names a depth-2 group "malignant melanoma"; clinicians use the same words for the
disease melanoma. The group declares `name_means: melanoma` in taxonomy.yaml, so the name index
sends the words to the disease, while the group keeps its name in paths and its exact id.
This file lists every colliding string with what it now resolves to, and scans the shipped
taxonomy and label maps for any collision that is not handled.
"""

from __future__ import annotations

import pytest

from skinr1.prompts import DEFAULT_FORMAT
from skinr1.prompts.parser import parse_completion, resolve_answer
from skinr1.taxonomy import Node, Taxonomy, TaxonomyError, normalize_label

# Every colliding string (and its spellings) -> the node it resolves to now.
COLLISIONS = {
    "malignant melanoma": "melanoma",
    "Malignant Melanoma": "melanoma",
    "malignant-melanoma": "melanoma",
    "the malignant melanomas": "melanoma",
}
# Words that qualify a disease name without changing the disease ("malignant melanoma" = melanoma).
QUALIFIERS = frozenset({"malignant", "benign", "cutaneous", "primary", "common", "skin", "acquired", "pigmented"})
# Dataset labels that deliberately mean something else than the same words in free text: the
# dataset's class is named after its main member but holds more.
DATASET_SPECIFIC = {
    # HAM10000's class "Actinic keratoses" is AKIEC: actinic keratoses AND Bowen's disease.
    ("ham10000", "actinic keratoses"): ("malignant_epidermal", "actinic_keratosis"),
    # DermNet's "Vascular Tumors" may hold malignant tumours; free text "vascular tumor" is the benign group.
    ("dermnet", "vascular tumors"): (None, "vascular_lesion"),
}


@pytest.mark.parametrize("text, node_id", sorted(COLLISIONS.items()))
def test_colliding_strings_resolve_to_the_disease(taxonomy, resolver, text, node_id):
    assert taxonomy.find(text) == node_id
    assert resolver.resolve(text).node_id == node_id  # free text
    assert resolver.resolve(text, source="fitzpatrick17k").node_id == node_id  # the dataset label agrees


def test_model_answer_malignant_melanoma_names_the_disease(resolver):
    parsed = parse_completion(DEFAULT_FORMAT.render("Irregular network, blue-white veil.", "Malignant melanoma (malignant)"))
    assert resolve_answer(parsed, resolver, "open") == ("melanoma", "resolved")


def test_the_group_keeps_its_name_path_and_id(taxonomy, resolver):
    assert taxonomy.path_names("melanoma") == ["malignant", "malignant melanoma", "melanoma"]
    assert taxonomy.node("malignant_melanoma").name_means == "melanoma"
    assert taxonomy.find("malignant_melanoma") == "malignant_melanoma"  # an exact id is never redirected
    # A manifest storing the group's id re-reads as the group, in any vocabulary.
    assert resolver.resolve("malignant_melanoma", source="fitzpatrick17k").node_id == "malignant_melanoma"
    assert resolver.resolve("malignant_melanoma").node_id == "malignant_melanoma"


def test_scan_no_group_name_is_an_unhandled_disease_name(taxonomy):
    """A group name that, without a qualifier word, is a descendant's name or synonym collides."""
    found = {}
    for node in taxonomy.nodes.values():
        descendants = {normalize_label(text): d for d in taxonomy.descendants(node.id)
                       for text in (taxonomy.node(d).name, *taxonomy.node(d).synonyms)}
        for text in (node.name, *node.synonyms):
            words = normalize_label(text).split()
            stripped = [" ".join(words[i:]) for i in range(len(words)) if all(w in QUALIFIERS for w in words[:i])]
            hits = {descendants[s] for s in stripped if s in descendants}
            if hits:
                found[normalize_label(text)] = (node.id, hits)
    assert found == {"malignant melanoma": ("malignant_melanoma", {"melanoma"})}
    for text, (group, hits) in found.items():
        assert taxonomy.node(group).name_means in hits and taxonomy.find(text) == taxonomy.node(group).name_means


def test_scan_dataset_labels_mean_what_free_text_means(resolver, taxonomy):
    """A dataset label and the same words as free text resolve alike, unless listed as dataset-specific."""
    divergent = {}
    for source, vocab in resolver.vocabularies.items():
        for label, node_id in vocab.labels.items():
            free = taxonomy.find(label)
            if free is not None and free != node_id:
                divergent[(source, label)] = (node_id, free)
        for label in vocab.unmapped:
            if taxonomy.find(label) is not None:
                divergent[(source, label)] = (None, taxonomy.find(label))
    assert divergent == DATASET_SPECIFIC


def test_scan_every_name_resolves_to_its_node_or_declared_meaning(taxonomy):
    for node in taxonomy.nodes.values():
        for text in (node.name, *node.synonyms):
            expected = node.name_means if text == node.name and node.name_means else node.id
            assert taxonomy.find(text) == expected, (node.id, text)


def _tree(name_means: str | None, child_synonyms=()) -> list[Node]:
    return [Node("root", "root", None, "benign", children=("group",)),
            Node("group", "bad thing", "root", "benign", children=("thing",), name_means=name_means),
            Node("thing", "thing", "group", "benign", synonyms=tuple(child_synonyms)),
            Node("other", "other", None, "benign")]


def test_name_means_must_point_below_the_group():
    assert Taxonomy.from_nodes(_tree("thing")).find("bad thing") == "thing"
    assert Taxonomy.from_nodes(_tree("thing", ["bad thing"])).find("bad thing") == "thing"  # same target: fine
    for target in ("other", "group", "nowhere"):
        with pytest.raises(TaxonomyError, match="name_means"):
            Taxonomy.from_nodes(_tree(target))
    without = Taxonomy.from_nodes(_tree(None))
    assert without.find("bad thing") == "group"
    with pytest.raises(TaxonomyError, match="used by both"):
        Taxonomy.from_nodes(_tree(None, ["bad thing"]))  # an undeclared collision is still refused
