"""The DDx graph: which diseases a trajectory may weigh against the labelled one.

Neighbours come from the knowledge base's ``differentials`` (a textbook's own list), falling back
to the taxonomy's declared ``ddx`` and then to the node's taxonomy siblings, so every node with a
sibling has at least one differential. The graph is symmetric for checking (`are_neighbours`):
if a textbook says melanoma is confused with nevus, citing melanoma in a nevus trajectory is
legitimate too. All functions are pure.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from skinr1.taxonomy import Taxonomy

SOURCE_KNOWLEDGE = "knowledge_base"
SOURCE_TAXONOMY = "taxonomy_ddx"
SOURCE_SIBLINGS = "taxonomy_siblings"
SOURCE_NONE = "none"
SOURCE_RANDOM = "random"
"""Not a neighbour source: marks a random-DDx differential drawn outside the graph (see plan)."""


def ddx_neighbours(
    node_id: str, taxonomy: Taxonomy, kb_differentials: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[str, ...], str]:
    """(neighbours, where they came from) for one node, first non-empty source wins.

    Ancestors and descendants are never differentials: "melanoma vs. melanocytic tumours" compares
    a disease with its own group.
    """
    candidates = (
        (SOURCE_KNOWLEDGE, kb_differentials.get(node_id, ())),
        (SOURCE_TAXONOMY, taxonomy.ddx(node_id)),
        (SOURCE_SIBLINGS, taxonomy.siblings(node_id)),
    )
    for source, ids in candidates:
        kept = tuple(dict.fromkeys(i for i in ids if i in taxonomy and not _related(node_id, i, taxonomy)))
        if kept:
            return kept, source
    return (), SOURCE_NONE


def _related(a: str, b: str, taxonomy: Taxonomy) -> bool:
    return taxonomy.is_ancestor(a, b) or taxonomy.is_ancestor(b, a)


def build_graph(
    taxonomy: Taxonomy, kb_differentials: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[tuple[str, ...], str]]:
    """Node id -> (neighbours, source) for every taxonomy node."""
    return {node_id: ddx_neighbours(node_id, taxonomy, kb_differentials) for node_id in taxonomy.nodes}


def are_neighbours(graph: Mapping[str, tuple[tuple[str, ...], str]], a: str, b: str) -> bool:
    """True when either node lists the other (the DDx relation is read symmetrically)."""
    return b in graph.get(a, ((), SOURCE_NONE))[0] or a in graph.get(b, ((), SOURCE_NONE))[0]


def outside_neighbourhood(
    node_id: str, candidates: Iterable[str], taxonomy: Taxonomy, graph: Mapping[str, tuple[tuple[str, ...], str]]
) -> tuple[str, ...]:
    """The candidates a random-DDx trajectory may weigh against `node_id`, in candidate order.

    Excluded: the node itself, its ancestors and descendants (its own lineage, as for DDx
    neighbours), its DDx neighbours read symmetrically (what `are_neighbours` would accept), and
    subtypes of a neighbour (a kind of a look-alike is a look-alike too, so not a "random" pick).
    """
    # The symmetric neighbour set once, rather than `are_neighbours` per candidate level: this runs
    # for every node of a 300-node tree against every disease.
    neighbours = set(graph.get(node_id, ((), SOURCE_NONE))[0])
    neighbours.update(other for other, (ids, _) in graph.items() if node_id in ids)
    lineage = {*taxonomy.path(node_id), *taxonomy.descendants(node_id)}
    return tuple(
        c for c in dict.fromkeys(candidates)
        if c in taxonomy and c not in lineage and neighbours.isdisjoint(taxonomy.path(c))
    )
