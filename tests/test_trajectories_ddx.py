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
    SOURCE_RANDOM,
    build_graph,
    ddx_neighbours,
    outside_neighbourhood,
)
from skinr1.trajectories.config import TypeMix
from skinr1.trajectories.kinds import TRAJECTORY_TYPES
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


# --------------------------------------------------------------------------- random-DDx types
def _wide_tree() -> Taxonomy:
    """root > {g1 > {a, b}, g2 > {d > {d1}, e}, g3 > {f, h}}; a declares d as DDx."""
    nodes = [
        Node("root", "root", None, "benign", children=("g1", "g2", "g3")),
        Node("g1", "group one", "root", "benign", children=("a", "b")),
        Node("g2", "group two", "root", "benign", children=("d", "e")),
        Node("g3", "group three", "root", "benign", children=("f", "h")),
        Node("a", "alpha", "g1", "benign", ddx=("d",)),
        Node("b", "beta", "g1", "benign"),
        Node("d", "delta", "g2", "benign", children=("d1",)),
        Node("d1", "delta one", "d", "benign"),
        Node("e", "epsilon", "g2", "benign"),
        Node("f", "phi", "g3", "benign"),
        Node("h", "eta", "g3", "benign"),
    ]
    return Taxonomy.from_nodes(nodes)


LEAVES = ("a", "b", "d1", "e", "f", "h")


def test_outside_neighbourhood_excludes_lineage_neighbours_and_their_subtypes():
    tree = _wide_tree()
    graph = build_graph(tree, {})
    # b lists a as a sibling (read symmetrically), d is a's DDx and d1 a subtype of it.
    assert outside_neighbourhood("a", LEAVES, tree, graph) == ("e", "f", "h")
    # A group's lineage is itself, its ancestors and everything below it; g2 and g3 are its siblings.
    assert outside_neighbourhood("g1", LEAVES, tree, graph) == ()
    # d's sibling e and a (which lists d) are out; so are its subtype d1 and unknown ids.
    assert outside_neighbourhood("d", (*LEAVES, "nope", "d1"), tree, graph) == ("b", "f", "h")
    # The knowledge base's list replaces the taxonomy's: f is now the look-alike, d1 is fair game.
    assert outside_neighbourhood("a", LEAVES, tree, build_graph(tree, {"a": ("f",)})) == ("d1", "e", "h")


def test_type_mix_lists_every_type_and_defaults_to_the_original_three():
    mix = TypeMix()
    assert tuple(mix.as_dict()) == TRAJECTORY_TYPES
    assert mix.as_dict() == {"direct": 0.4, "ddx_keep": 0.3, "ddx_switch": 0.3, "random_ddx_keep": 0.0, "random_ddx_switch": 0.0}
    assert TypeMix(1, 0, 0, 1, 2).as_dict()["random_ddx_switch"] == 0.5
    with pytest.raises(ValueError, match="types.random_ddx_keep"):
        TypeMix(random_ddx_keep=-1)
    with pytest.raises(ValueError, match="not all be 0"):
        TypeMix(0, 0, 0, 0, 0)


def test_assign_type_with_the_random_types():
    shares = {"direct": 0.2, "ddx_keep": 0.2, "ddx_switch": 0.2, "random_ddx_keep": 0.2, "random_ddx_switch": 0.2}
    assert [assign_type(u, shares) for u in (0.1, 0.3, 0.5, 0.7, 0.9)] == list(TRAJECTORY_TYPES)
    types = Counter(assign_type(stable_unit(3, f"rec{i}", "type"), shares) for i in range(3000))
    assert all(abs(types[t] / 3000 - 0.2) < 0.04 for t in TRAJECTORY_TYPES)
    # With zero random shares every record keeps the type it had before the random types existed.
    old = {"direct": 0.4, "ddx_keep": 0.3, "ddx_switch": 0.3}
    new = {**old, "random_ddx_keep": 0.0, "random_ddx_switch": 0.0}
    units = [stable_unit(0, f"rec{i}", "type") for i in range(500)]
    assert [assign_type(u, new) for u in units] == [assign_type(u, old) for u in units]


def test_plan_draws_the_random_differential_from_the_pool_deterministically():
    tree = _wide_tree()
    graph = build_graph(tree, {})
    pool = lambda node_id: outside_neighbourhood(node_id, LEAVES, tree, graph)  # noqa: E731
    plans = [plan_record(f"r{i}", "a", 5, {"random_ddx_keep": 1.0}, graph, set(), pool) for i in range(60)]
    assert {p.differential for p in plans} == {"e", "f", "h"}
    assert all((p.trajectory_type, p.assigned_type, p.ddx_source) == ("random_ddx_keep",) * 2 + (SOURCE_RANDOM,) for p in plans)
    assert plans == [plan_record(f"r{i}", "a", 5, {"random_ddx_keep": 1.0}, graph, set(), pool) for i in range(60)]
    other_seed = [plan_record(f"r{i}", "a", 6, {"random_ddx_keep": 1.0}, graph, set(), pool) for i in range(60)]
    assert [p.differential for p in other_seed] != [p.differential for p in plans]
    # Described diseases are preferred, as for the DDx types.
    assert {plan_record(f"r{i}", "a", 5, {"random_ddx_switch": 1.0}, graph, {"h"}, pool).differential for i in range(20)} == {"h"}


def test_random_types_fall_back_to_direct_without_a_pool():
    graph = build_graph(_wide_tree(), {})
    plan = plan_record("r1", "a", 0, {"random_ddx_switch": 1.0}, graph, set())
    assert (plan.trajectory_type, plan.assigned_type, plan.differential) == ("direct", "random_ddx_switch", None)


def test_shipped_random_differentials_are_never_neighbours_nor_on_the_path():
    from skinr1.trajectories.config import TrajectoriesConfig
    from skinr1.trajectories.context import build_context

    context = build_context(TrajectoriesConfig())
    taxonomy, graph = context.taxonomy, context.graph
    shares = {"random_ddx_keep": 1.0, "random_ddx_switch": 1.0}
    drawn = 0
    for node_id in taxonomy.nodes:
        for i in range(4):
            plan = plan_record(f"{node_id}:{i}", node_id, 0, shares, graph, context.described, context.random_pool)
            if plan.differential is None:
                assert plan.trajectory_type == "direct" and not context.random_pool(node_id)
                continue
            drawn += 1
            x = plan.differential
            assert x in context.diseases and not are_neighbours(graph, node_id, x)
            assert x not in taxonomy.path(node_id) and node_id not in taxonomy.path(x)
            assert not any(are_neighbours(graph, node_id, level) for level in taxonomy.path(x))
    assert drawn > 3 * len(taxonomy.nodes)
