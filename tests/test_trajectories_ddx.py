"""DDx graph fallbacks and the per-record plan (type assignment, differential choice)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from skinr1.taxonomy import Node, Taxonomy
from skinr1.trajectories.ddx import (
    SOURCE_KNOWLEDGE,
    SOURCE_NONE,
    SOURCE_SIBLINGS,
    SOURCE_TAXONOMY,
    are_neighbours,
    build_graph,
    ddx_neighbours,
)
from skinr1.trajectories.plan import assign_type, choose_differential, plan_record, stable_unit


def _tree() -> Taxonomy:
    """root > {g1 > {a, b, c}, g2 > {d}}; a declares d as DDx; `solo` is a root with no siblings below."""
    nodes = [
        Node("root", "root", None, "benign", children=("g1", "g2")),
        Node("g1", "group one", "root", "benign", children=("a", "b", "c")),
        Node("g2", "group two", "root", "benign", children=("d",)),
        Node("a", "alpha", "g1", "benign", ddx=("d",)),
        Node("b", "beta", "g1", "benign"),
        Node("c", "gamma", "g1", "benign"),
        Node("d", "delta", "g2", "benign"),
    ]
    return Taxonomy.from_nodes(nodes)


def test_knowledge_base_differentials_come_first():
    neighbours, source = ddx_neighbours("a", _tree(), {"a": ("c", "b")})
    assert (neighbours, source) == (("c", "b"), SOURCE_KNOWLEDGE)


def test_falls_back_to_taxonomy_ddx_then_siblings_then_none():
    tree = _tree()
    assert ddx_neighbours("a", tree, {}) == (("d",), SOURCE_TAXONOMY)
    assert ddx_neighbours("b", tree, {}) == (("a", "c"), SOURCE_SIBLINGS)
    assert ddx_neighbours("d", tree, {}) == ((), SOURCE_NONE)  # an only child: nothing to compare with
    assert ddx_neighbours("root", tree, {}) == ((), SOURCE_NONE)


def test_ancestors_descendants_and_unknown_ids_are_never_differentials():
    tree = _tree()
    neighbours, source = ddx_neighbours("a", tree, {"a": ("g1", "root", "nope", "a")})
    assert source == SOURCE_TAXONOMY and neighbours == ("d",)  # the whole KB list was unusable
    assert ddx_neighbours("g1", tree, {"g1": ("a", "g2")}) == (("g2",), SOURCE_KNOWLEDGE)


def test_graph_is_read_symmetrically():
    graph = build_graph(_tree(), {})
    assert set(graph) == set(_tree().nodes)
    assert are_neighbours(graph, "a", "d") and are_neighbours(graph, "d", "a")
    assert not are_neighbours(graph, "c", "d")


def test_shipped_graph_uses_the_knowledge_base():
    from skinr1.taxonomy import default_taxonomy
    from skinr1.trajectories.knowledge_base import load_knowledge_base

    taxonomy = default_taxonomy()
    kb = load_knowledge_base(None, taxonomy)
    graph = build_graph(taxonomy, kb.differentials())
    neighbours, source = graph["melanoma"]
    assert source == SOURCE_KNOWLEDGE and "melanocytic_nevus" in neighbours


# --------------------------------------------------------------------------- plan
def test_assign_type_follows_cumulative_shares():
    shares = {"direct": 0.5, "ddx_keep": 0.25, "ddx_switch": 0.25}
    assert [assign_type(u, shares) for u in (0.0, 0.49, 0.5, 0.74, 0.75, 0.999999)] == [
        "direct", "direct", "ddx_keep", "ddx_keep", "ddx_switch", "ddx_switch"
    ]
    assert {assign_type(u / 10, {"direct": 0, "ddx_keep": 2, "ddx_switch": 0}) for u in range(10)} == {"ddx_keep"}
    with pytest.raises(ValueError):
        assign_type(0.3, {"direct": 0})


def test_type_assignment_is_deterministic_and_close_to_the_shares():
    shares = {"direct": 0.4, "ddx_keep": 0.3, "ddx_switch": 0.3}
    types = [assign_type(stable_unit(7, f"rec{i}", "type"), shares) for i in range(3000)]
    again = [assign_type(stable_unit(7, f"rec{i}", "type"), shares) for i in range(3000)]
    assert types == again
    counts = Counter(types)
    assert abs(counts["direct"] / 3000 - 0.4) < 0.04 and abs(counts["ddx_switch"] / 3000 - 0.3) < 0.04
    assert stable_unit(7, "rec1", "type") != stable_unit(8, "rec1", "type")


def test_choose_differential_prefers_described_nodes():
    rng = random.Random(0)
    assert {choose_differential(("a", "b", "c"), {"b"}, rng) for _ in range(20)} == {"b"}
    assert choose_differential(("a",), set(), rng) == "a"
    assert choose_differential((), {"a"}, rng) is None


def test_plan_falls_back_to_direct_without_neighbours():
    graph = build_graph(_tree(), {})
    plan = plan_record("r1", "d", 0, {"ddx_switch": 1.0}, graph, set())
    assert (plan.trajectory_type, plan.assigned_type, plan.differential) == ("direct", "ddx_switch", None)
    plan = plan_record("r1", "b", 0, {"ddx_keep": 1.0}, graph, {"c"})
    assert (plan.trajectory_type, plan.differential, plan.ddx_source) == ("ddx_keep", "c", SOURCE_SIBLINGS)
