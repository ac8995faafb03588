"""BM25 retrieval: tokenising, the pure ranking step, queries and candidates."""

from __future__ import annotations

import pytest

from skinr1.taxonomy import default_taxonomy
from skinr1.trajectories.ddx import build_graph
from skinr1.trajectories.knowledge_base import Passage, load_knowledge_base
from skinr1.trajectories.retrieval import PassageIndex, build_query, candidate_nodes, rank_candidates, tokenize


def _passage(node_id, section, text):
    return Passage(node_id, node_id.replace("_", " "), section, text, f"{node_id}.md#{section}")


def test_tokenize_folds_case_accents_and_drops_function_words():
    assert tokenize("The Naévus is a BROWN, round lesion.") == ["naevus", "brown", "round", "lesion"]


def test_rank_candidates_filters_sorts_and_breaks_ties_by_order():
    passages = [_passage("a", "s1", ""), _passage("b", "s1", ""), _passage("a", "s2", ""), _passage("c", "s1", "")]
    ranked = rank_candidates([1.0, 5.0, 1.0, 9.0], passages, {"a", "b"}, top_k=3)
    assert [(r.rank, r.node_id, r.section, r.score) for r in ranked] == [
        (1, "b", "s1", 5.0), (2, "a", "s1", 1.0), (3, "a", "s2", 1.0)
    ]
    assert rank_candidates([1.0, 5.0, 1.0, 9.0], passages, {"a", "b"}, top_k=1)[0].node_id == "b"
    assert rank_candidates([1.0] * 4, passages, {"zzz"}, top_k=3) == []
    assert ranked[0].to_metadata() == {"rank": 1, "score": 5.0, "node_id": "b", "section": "s1", "source": "b.md#s1"}


def test_bm25_ranks_the_matching_passage_first():
    index = PassageIndex([
        _passage("psoriasis", "Visible features", "salmon plaques with silvery scale"),
        _passage("vitiligo", "Visible features", "milky white patches with a darker rim"),
        _passage("eczema", "Visible features", "ill defined red areas with crusts"),
    ])
    ranked = index.retrieve("silvery scale plaques", {"psoriasis", "vitiligo", "eczema"}, top_k=3)
    assert ranked[0].node_id == "psoriasis" and ranked[0].score > ranked[1].score
    assert PassageIndex([]).retrieve("anything", {"x"}, 3) == []


def test_query_and_candidates_for_a_shipped_node():
    taxonomy = default_taxonomy()
    kb = load_knowledge_base(None, taxonomy)
    query = build_query("basal_cell_carcinoma", taxonomy, kb, original_label="BCC")
    assert "basal cell carcinoma" in query and "malignant epidermal" in query and "red branching surface vessels" in query
    neighbours = build_graph(taxonomy, kb.differentials())["basal_cell_carcinoma"][0]
    candidates = candidate_nodes("basal_cell_carcinoma", taxonomy, neighbours)
    assert candidates[:3] == ["basal_cell_carcinoma", "malignant_epidermal", "malignant"]
    assert set(neighbours) <= set(candidates)
    ranked = PassageIndex.from_knowledge_base(kb).retrieve(query, candidates, top_k=5)
    assert ranked[0].node_id == "basal_cell_carcinoma"
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
    assert all(r.node_id in candidates for r in ranked)
    assert ranked == sorted(ranked, key=lambda r: -r.score)


@pytest.mark.parametrize("leaf", ["melanoma", "dermatofibroma", "vitiligo", "seborrheic_keratosis"])
def test_every_demo_disease_retrieves_its_own_entry_first(leaf):
    taxonomy = default_taxonomy()
    kb = load_knowledge_base(None, taxonomy)
    graph = build_graph(taxonomy, kb.differentials())
    ranked = PassageIndex.from_knowledge_base(kb).retrieve(
        build_query(leaf, taxonomy, kb), candidate_nodes(leaf, taxonomy, graph[leaf][0]), top_k=3
    )
    assert ranked[0].node_id == leaf
