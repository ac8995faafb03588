"""The disease tree: nodes of any depth, validated on load, with path/LCA/sibling queries.

The shipped tree lives in `skinr1/taxonomy/data/taxonomy.yaml` (format documented at the top of
that file). Node ids are stable snake_case strings; names and synonyms are what humans and models
write. Label maps that translate dataset vocabularies onto node ids live in `label_maps.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from skinr1.taxonomy.normalize import normalize_label, singular_variants

MALIGNANCY_CLASSES = ("benign", "precancerous", "malignant", "non-neoplastic")
DEFAULT_TAXONOMY_PATH = Path(__file__).parent / "data" / "taxonomy.yaml"


class TaxonomyError(ValueError):
    """The taxonomy file is malformed (duplicate ids or synonyms, cycles, unknown references)."""


@dataclass(frozen=True)
class Node:
    """One disease or disease group."""

    id: str
    name: str
    parent: str | None
    malignancy: str
    synonyms: tuple[str, ...] = ()
    ddx: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    description: str = ""
    name_means: str | None = None
    """A descendant that the node's name denotes in clinical free text, or None.

    Set on a group whose name is also a disease name (the Fitzpatrick17k group "malignant
    melanoma" vs the disease melanoma): the name index then sends the name to that descendant,
    while the node keeps its name for paths and reports and stays reachable by its id."""


@dataclass
class Taxonomy:
    """A validated disease tree. Build it with `Taxonomy.from_nodes` or `load_taxonomy`."""

    nodes: dict[str, Node]
    _name_index: dict[str, str] = field(default_factory=dict, repr=False)
    _depth: dict[str, int] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_nodes(cls, nodes: Iterable[Node]) -> "Taxonomy":
        by_id: dict[str, Node] = {}
        for node in nodes:
            if node.id in by_id:
                raise TaxonomyError(f"duplicate node id {node.id!r}")
            if node.malignancy not in MALIGNANCY_CLASSES:
                raise TaxonomyError(
                    f"node {node.id!r}: malignancy {node.malignancy!r} is not one of {MALIGNANCY_CLASSES}"
                )
            by_id[node.id] = node
        taxonomy = cls(nodes=by_id)
        taxonomy._validate()
        return taxonomy

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Taxonomy":
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
        if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
            raise TaxonomyError(f"{path}: expected a mapping with a 'nodes' list at the top")
        return cls.from_nodes(_flatten(document["nodes"], parent=None, inherited_malignancy=None))

    def _validate(self) -> None:
        for node in self.nodes.values():
            if node.parent is not None and node.parent not in self.nodes:
                raise TaxonomyError(f"node {node.id!r} has unknown parent {node.parent!r}")
            for neighbour in node.ddx:
                if neighbour not in self.nodes:
                    raise TaxonomyError(f"node {node.id!r} lists unknown DDx neighbour {neighbour!r}")
                if neighbour == node.id:
                    raise TaxonomyError(f"node {node.id!r} lists itself as a DDx neighbour")
        for node_id in self.nodes:  # every node reaches a root without revisiting a node
            seen: set[str] = set()
            current: str | None = node_id
            while current is not None:
                if current in seen:
                    raise TaxonomyError(f"cycle through node {current!r}")
                seen.add(current)
                current = self.nodes[current].parent
            self._depth[node_id] = len(seen)
        for node in self.nodes.values():
            if node.name_means is not None and (
                node.name_means not in self.nodes or node.name_means == node.id or node.id not in self.path(node.name_means)
            ):
                raise TaxonomyError(f"node {node.id!r}: name_means {node.name_means!r} is not one of its descendants")
        self._name_index = {}
        for node in self.nodes.values():
            for text in (node.name, *node.synonyms):
                key = normalize_label(text)
                if not key:
                    raise TaxonomyError(f"node {node.id!r} has an empty name or synonym")
                # A group whose name is a disease name hands that name to the disease (name_means).
                target = node.name_means if text == node.name and node.name_means else node.id
                owner = self._name_index.get(key)
                if owner is not None and owner != target:
                    raise TaxonomyError(f"name/synonym {text!r} is used by both {owner!r} and {node.id!r}")
                self._name_index[key] = target
        # Node ids double as names ("basal_cell_carcinoma"); they must not point elsewhere (except
        # to what the node's name means: an exact id still finds the node itself, see `find`).
        for node_id, node in self.nodes.items():
            owner = self._name_index.setdefault(normalize_label(node_id), node_id)
            if owner not in (node_id, node.name_means):
                raise TaxonomyError(f"node id {node_id!r} reads as a name of {owner!r}")

    # ----------------------------------------------------------------- queries
    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise KeyError(f"unknown taxonomy node {node_id!r}") from None

    def roots(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent is None]

    def children(self, node_id: str) -> list[Node]:
        return [self.nodes[c] for c in self.node(node_id).children]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.children]

    def is_leaf(self, node_id: str) -> bool:
        return not self.node(node_id).children

    def depth(self, node_id: str) -> int:
        """1 for a top-level category, 2 for its groups, and so on."""
        self.node(node_id)
        return self._depth[node_id]

    def path(self, node_id: str) -> list[str]:
        """Node ids from the top-level category down to `node_id` (inclusive)."""
        ids: list[str] = []
        current: str | None = node_id
        while current is not None:
            ids.append(current)
            current = self.node(current).parent
        return ids[::-1]

    def path_names(self, node_id: str) -> list[str]:
        return [self.nodes[i].name for i in self.path(node_id)]

    def ancestor_at_depth(self, node_id: str, depth: int) -> str:
        path = self.path(node_id)
        if not 1 <= depth <= len(path):
            raise ValueError(f"node {node_id!r} has no ancestor at depth {depth}")
        return path[depth - 1]

    def is_ancestor(self, ancestor: str, node_id: str) -> bool:
        """True when `ancestor` lies on the path to `node_id` (a node is its own ancestor)."""
        return ancestor in self.path(node_id)

    def lowest_common_ancestor(self, a: str, b: str) -> str | None:
        """Deepest node on both paths, or None when they are in different top-level categories."""
        common = None
        for x, y in zip(self.path(a), self.path(b)):
            if x != y:
                break
            common = x
        return common

    lca = lowest_common_ancestor

    def siblings(self, node_id: str) -> list[str]:
        parent = self.node(node_id).parent
        pool = self.nodes[parent].children if parent else tuple(r.id for r in self.roots())
        return [s for s in pool if s != node_id]

    def descendants(self, node_id: str) -> Iterator[str]:
        for child in self.node(node_id).children:
            yield child
            yield from self.descendants(child)

    def malignancy(self, node_id: str) -> str:
        return self.node(node_id).malignancy

    def ddx(self, node_id: str) -> list[str]:
        """DDx neighbours declared on the node (may be empty; see trajectories.ddx for fallbacks)."""
        return list(self.node(node_id).ddx)

    def find(self, name: str) -> str | None:
        """Node id whose name, synonym or id matches `name` (normalised; plurals tolerated).

        An exact node id wins over names, so manifests that store `node_id`s re-read as the same
        node even where the normalised id is a name another node answers to (`name_means`).
        """
        if name in self.nodes:
            return name
        key = normalize_label(name)
        if key in self._name_index:
            return self._name_index[key]
        for candidate in singular_variants(key):
            if candidate in self._name_index:
                return self._name_index[candidate]
        return None

    def names(self) -> dict[str, str]:
        """Every normalised name/synonym -> node id (a copy)."""
        return dict(self._name_index)

    def groups_named_like_diseases(self) -> dict[str, str]:
        """Normalised name -> id of each node whose name the index hands to a descendant
        (`name_means`): in free text that name may still mean the node itself."""
        return {normalize_label(n.name): n.id for n in self.nodes.values() if n.name_means}

    def format_tree(self) -> str:
        lines: list[str] = []

        def walk(node_id: str, indent: int) -> None:
            node = self.nodes[node_id]
            extra = f"  [{node.malignancy}]" if node.parent is None or node.malignancy != self.nodes[node.parent].malignancy else ""
            lines.append(f"{'  ' * indent}{node.name} ({node.id}){extra}")
            for child in node.children:
                walk(child, indent + 1)

        for root in self.roots():
            walk(root.id, 0)
        return "\n".join(lines)


def _flatten(entries: list[Any], parent: str | None, inherited_malignancy: str | None) -> list[Node]:
    nodes: list[Node] = []
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise TaxonomyError(f"every node needs at least an 'id' (under {parent!r}): {entry!r}")
        malignancy = entry.get("malignancy", inherited_malignancy)
        if malignancy is None:
            raise TaxonomyError(f"top-level node {entry['id']!r} needs a 'malignancy'")
        children = entry.get("children") or []
        nodes.append(
            Node(
                id=str(entry["id"]),
                name=str(entry.get("name", str(entry["id"]).replace("_", " "))),
                parent=parent,
                malignancy=malignancy,
                synonyms=tuple(str(s) for s in entry.get("synonyms") or ()),
                ddx=tuple(str(s) for s in entry.get("ddx") or ()),
                children=tuple(str(c["id"]) for c in children if isinstance(c, dict) and "id" in c),
                description=str(entry.get("description", "")),
                name_means=str(entry["name_means"]) if entry.get("name_means") else None,
            )
        )
        nodes.extend(_flatten(children, parent=str(entry["id"]), inherited_malignancy=malignancy))
    return nodes
