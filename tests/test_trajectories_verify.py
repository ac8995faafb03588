"""Verification rules, one by one, on a small hand-built taxonomy (independent of the shipped tree)."""

from __future__ import annotations

import pytest

from skinr1.prompts import DEFAULT_FORMAT
from skinr1.taxonomy import Taxonomy
from skinr1.trajectories.ddx import build_graph
from skinr1.trajectories.verify import NameMatcher, verify_completion

MINI_TAXONOMY = """
nodes:
  - id: benign
    malignancy: benign
    children:
      - id: benign_melanocytic
        name: benign melanocytic
        children:
          - id: nevus
            name: melanocytic nevus
            synonyms: [mole]
            ddx: [melanoma]
            children:
              - id: blue_nevus
                name: blue nevus
      - id: benign_epidermal
        name: benign epidermal
        children:
          - id: seborrheic_keratosis
            name: seborrheic keratosis
            ddx: [melanoma, nevus]
  - id: malignant
    malignancy: malignant
    children:
      - id: malignant_melanocytic
        name: malignant melanocytic
        children:
          - id: melanoma
            name: melanoma
      - id: malignant_epidermal
        name: malignant epidermal
        children:
          - id: bcc
            name: basal cell carcinoma
  - id: non_neoplastic
    name: non-neoplastic
    malignancy: non-neoplastic
    children:
      - id: ulcer
        name: ulcer
"""


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    path = tmp_path_factory.mktemp("tax") / "taxonomy.yaml"
    path.write_text(MINI_TAXONOMY)
    taxonomy = Taxonomy.from_yaml(path)
    return taxonomy, build_graph(taxonomy, {}), NameMatcher(taxonomy)


def _verify(mini, reasoning, answer="melanocytic nevus (benign)", expected="nevus", kind="direct", matcher=None,
            differential=None):
    taxonomy, graph, default_matcher = mini
    text = DEFAULT_FORMAT.render(reasoning, answer) if answer is not None else reasoning
    return verify_completion(text, expected, kind, taxonomy, graph, matcher or default_matcher, DEFAULT_FORMAT,
                             differential)


GOOD = "Even brown network. Category benign, group benign melanocytic, so melanocytic nevus."


def test_a_correct_direct_trajectory_passes(mini):
    verdict = _verify(mini, GOOD)
    assert verdict.ok and verdict.reason == "ok" and verdict.reasons == ()


def test_format_is_checked_with_the_shared_parser(mini):
    verdict = _verify(mini, "<final diagnosis>melanocytic nevus (benign)</final diagnosis>", answer=None)
    assert verdict.reason == "format_missing_reasoning"
    assert _verify(mini, "<thinking>x</thinking> chatter <final diagnosis>mole (benign)</final diagnosis>", answer=None).reason == "format_text_outside_tags"


def test_answer_must_resolve_to_the_expected_node(mini):
    assert _verify(mini, GOOD, answer="melanoma (benign)").reason == "answer_wrong_node"
    assert _verify(mini, GOOD, answer="something odd (benign)").reason == "answer_unresolved"
    assert _verify(mini, GOOD, answer="mole (benign)").ok  # synonyms resolve


def test_malignancy_must_be_stated_and_right(mini):
    assert _verify(mini, GOOD, answer="melanocytic nevus").reason == "malignancy_missing"
    assert _verify(mini, GOOD, answer="melanocytic nevus (malignant)").reason == "malignancy_wrong"


def test_groups_named_must_be_ancestors(mini):
    verdict = _verify(mini, GOOD + " It is malignant epidermal.")
    assert verdict.reason == "hierarchy_not_ancestor"
    assert verdict.details["off_path_groups"] == ["malignant_epidermal"]


def test_longest_name_wins(mini):
    # "malignant melanocytic" is one group mention, not "malignant" plus a word.
    verdict = _verify(mini, GOOD + " Not malignant melanocytic.")
    assert verdict.details["off_path_groups"] == ["malignant_melanocytic"]


def test_ancestors_of_a_cited_differential_are_context_not_errors(mini):
    reasoning = GOOD + " Melanoma, a malignant melanocytic tumour, was considered; I keep melanocytic nevus."
    verdict = _verify(mini, reasoning, kind="ddx_keep")
    assert verdict.ok and verdict.cited_differentials == ("melanoma",)


def test_subtypes_of_the_answer_are_too_specific(mini):
    assert _verify(mini, GOOD + " Probably a blue nevus.").reason == "hierarchy_below_answer"


def test_cited_differential_must_be_a_ddx_neighbour(mini):
    verdict = _verify(mini, GOOD + " Basal cell carcinoma was considered.", kind="ddx_keep")
    assert verdict.reason == "differential_not_neighbour"
    assert verdict.details["non_neighbours"] == ["bcc"]


def test_neighbours_are_read_symmetrically(mini):
    # Only seborrheic keratosis lists nevus; citing it from a nevus trajectory is still fine.
    assert _verify(mini, GOOD + " Seborrheic keratosis was considered.", kind="ddx_switch").ok


def test_ddx_types_must_cite_a_differential(mini):
    assert _verify(mini, GOOD, kind="ddx_keep").reason == "no_differential_cited"
    assert _verify(mini, GOOD, kind="ddx_switch").reason == "no_differential_cited"


def test_plurals_are_recognised(mini):
    verdict = _verify(mini, GOOD + " Melanomas were considered.", kind="ddx_keep")
    assert verdict.cited_differentials == ("melanoma",)


def test_morphology_terms_are_not_diagnoses(mini):
    taxonomy = mini[0]
    reasoning = GOOD + " No ulcer is seen."
    assert _verify(mini, reasoning).reason == "differential_not_neighbour"
    assert _verify(mini, reasoning, matcher=NameMatcher(taxonomy, ignore=["Ulcer"])).ok


def test_all_failing_checks_are_listed_in_order(mini):
    verdict = _verify(mini, "Basal cell carcinoma.", answer="melanoma", kind="ddx_keep")
    assert verdict.reasons == ("answer_wrong_node", "malignancy_missing", "differential_not_neighbour")
    assert verdict.reason == "answer_wrong_node"


def test_unknown_trajectory_type_is_an_error(mini):
    with pytest.raises(ValueError, match="unknown trajectory type"):
        _verify(mini, GOOD, kind="sideways")


# --------------------------------------------------------------------------- random-DDx types
# Basal cell carcinoma is no DDx neighbour of melanocytic nevus: the random differential of these cases.
RANDOM_KEEP = GOOD + " Basal cell carcinoma, a malignant epidermal tumour, would be pearly; I keep melanocytic nevus."
RANDOM_SWITCH = "At first glance basal cell carcinoma. But no pearly rim. Category benign, group benign melanocytic, so melanocytic nevus."


@pytest.mark.parametrize("kind, reasoning", [("random_ddx_keep", RANDOM_KEEP), ("random_ddx_switch", RANDOM_SWITCH)])
def test_random_types_accept_the_planned_differential_and_its_ancestors(mini, kind, reasoning):
    verdict = _verify(mini, reasoning, kind=kind, differential="bcc")
    assert verdict.ok and verdict.cited_differentials == ("bcc",)


def test_the_planned_differential_is_read_only_for_the_random_types(mini):
    # For a DDx type, bcc stays a stray disease and its group a wrong hierarchy statement.
    verdict = _verify(mini, RANDOM_KEEP, kind="ddx_keep", differential="bcc")
    assert verdict.reasons == ("hierarchy_not_ancestor", "differential_not_neighbour")


def test_random_types_must_name_their_differential(mini):
    assert _verify(mini, GOOD, kind="random_ddx_keep", differential="bcc").reason == "random_differential_not_cited"
    # A DDx neighbour is a fine differential in general, but it is not the planned random one.
    verdict = _verify(mini, GOOD + " Melanoma was considered.", kind="random_ddx_keep", differential="bcc")
    assert verdict.reasons == ("random_differential_not_cited",)


def test_random_types_reject_other_non_neighbours(mini):
    verdict = _verify(mini, RANDOM_KEEP + " Or an ulcer.", kind="random_ddx_keep", differential="bcc")
    assert verdict.reason == "differential_not_neighbour" and verdict.details["non_neighbours"] == ["ulcer"]


def test_random_switch_must_end_on_the_truth(mini):
    verdict = _verify(mini, RANDOM_SWITCH, answer="basal cell carcinoma (malignant)", kind="random_ddx_switch", differential="bcc")
    assert verdict.reasons == ("answer_wrong_node", "malignancy_wrong")


def test_random_types_need_the_planned_differential(mini):
    with pytest.raises(ValueError, match="needs the planned differential"):
        _verify(mini, RANDOM_KEEP, kind="random_ddx_keep")
