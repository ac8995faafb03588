"""The DDx graph: which diseases a trajectory may weigh against the labelled one.

Neighbours come from the knowledge base's ``differentials`` (a textbook's own list), falling back
to the taxonomy's declared ``ddx`` and then to the node's taxonomy siblings, so every node with a
sibling has at least one differential. The graph is symmetric for checking (`are_neighbours`):
if a textbook says melanoma is confused with nevus, citing melanoma in a nevus trajectory is
legitimate too. All functions are pure.
"""

from __future__ import annotations

from typing import Mapping

from skinr1.taxonomy import Taxonomy

SOURCE_KNOWLEDGE = "knowledge_base"
SOURCE_TAXONOMY = "taxonomy_ddx"
SOURCE_SIBLINGS = "taxonomy_siblings"
SOURCE_NONE = "none"


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
