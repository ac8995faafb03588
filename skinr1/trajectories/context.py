"""What every stage shares: taxonomy, knowledge base, BM25 index, DDx graph, name matcher, format.

Built once per process (the driver, or each Ray task: rebuilding costs ~0.1 s and avoids shipping
the index through the object store).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from skinr1.data.records import Record
from skinr1.prompts import AnswerFormat
from skinr1.taxonomy import Taxonomy, default_resolver
from skinr1.trajectories.config import TrajectoriesConfig
from skinr1.trajectories.ddx import build_graph, outside_neighbourhood
from skinr1.trajectories.knowledge_base import KnowledgeBase, load_knowledge_base
from skinr1.trajectories.plan import Plan
from skinr1.trajectories.retrieval import PassageIndex, Retrieved
from skinr1.trajectories.verify import NameMatcher

# Depth 1 and 2 are the category and group partitions (Fitzpatrick17k's; see taxonomy.yaml), so
# nodes from depth 3 down are diseases and their subtypes, leaves or not (psoriasis has subtypes).
DISEASE_DEPTH = 3


@dataclass
class Context:
    taxonomy: Taxonomy
    kb: KnowledgeBase
    index: PassageIndex
    graph: dict[str, tuple[tuple[str, ...], str]]
    matcher: NameMatcher
    fmt: AnswerFormat
    _random_pools: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def described(self) -> frozenset[str]:
        """Nodes whose knowledge-base entry lists visible features (preferred differentials)."""
        return frozenset(n for n, e in self.kb.entries.items() if e.visible_features)

    @cached_property
    def diseases(self) -> tuple[str, ...]:
        """What a random differential is drawn from: diseases (leaves, and every node from depth
        `DISEASE_DEPTH` down) whose own name the matcher finds as that node. One named by a morphology
        word ("ulcer"), or whose name means another node, could never be seen cited by verification."""
        taxonomy = self.taxonomy
        return tuple(
            node_id for node_id, node in taxonomy.nodes.items()
            if (taxonomy.is_leaf(node_id) or taxonomy.depth(node_id) >= DISEASE_DEPTH)
            and [m.node_id for m in self.matcher.find(node.name)] == [node_id]
        )

    def random_pool(self, node_id: str) -> tuple[str, ...]:
        """Diseases outside `node_id`'s DDx neighbourhood (`ddx.outside_neighbourhood`), per node once."""
        if node_id not in self._random_pools:
            self._random_pools[node_id] = outside_neighbourhood(node_id, self.diseases, self.taxonomy, self.graph)
        return self._random_pools[node_id]


def build_context(config: TrajectoriesConfig, taxonomy: Taxonomy | None = None) -> Context:
    taxonomy = taxonomy or default_resolver().taxonomy
    kb = load_knowledge_base(config.knowledge_dir or None, taxonomy)
    return Context(
        taxonomy=taxonomy,
        kb=kb,
        index=PassageIndex.from_knowledge_base(kb),
        graph=build_graph(taxonomy, kb.differentials()),
        matcher=NameMatcher(taxonomy, config.verify.morphology_terms),
        fmt=AnswerFormat(reasoning_tag=config.reasoning_tag, answer_tag=config.answer_tag),
    )


@dataclass(frozen=True)
class Job:
    """One record to write a trajectory for."""

    record: Record
    plan: Plan
    retrieved: tuple[Retrieved, ...]

    @property
    def node_id(self) -> str:
        assert self.record.node_id is not None
        return self.record.node_id


@dataclass(frozen=True)
class Generation:
    """A writer's output for one job: a completion, or why there is none."""

    completion: str | None
    error: str | None = None
    """Reason code when `completion` is None (e.g. "teacher_http_400", "teacher_timeout")."""
    detail: str = ""
    cache_hit: bool = False
