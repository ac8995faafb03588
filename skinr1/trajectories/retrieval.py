"""BM25 retrieval of knowledge-base passages for one record.

For each record the candidates are the passages of the labelled node, of its ancestors (group and
category context for the hierarchy walk) and of its DDx neighbours; they are ranked with BM25
(`rank_bm25.BM25Okapi`) against a query built from the record: label name and synonyms, hierarchy
path and the node's visible features. The index covers the whole knowledge base so that term
weights (IDF) do not depend on which handful of passages happen to be candidates.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from skinr1.taxonomy import Taxonomy
from skinr1.trajectories.knowledge_base import KnowledgeBase, Passage

_WORD = re.compile(r"[a-z0-9]+")
# Function words only: domain words ("lesion", "skin") still carry weight through IDF.
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were with "
    "which who may can often usually than more most not no".split()
)


@dataclass(frozen=True)
class Retrieved:
    """One ranked passage, as kept in a trajectory's metadata."""

    rank: int
    score: float
    node_id: str
    section: str
    source: str
    text: str

    def to_metadata(self) -> dict:
        data = asdict(self)
        data.pop("text")  # the text is in the knowledge base; metadata keeps the pointer
        data["score"] = round(self.score, 4)
        return data


def tokenize(text: str) -> list[str]:
    """Lower-case ASCII word tokens without function words (accents folded: 'naevus' == 'naevus')."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return [w for w in _WORD.findall(folded) if w not in STOPWORDS]


def build_query(node_id: str, taxonomy: Taxonomy, kb: KnowledgeBase, original_label: str = "") -> str:
    """The query text for a record labelled `node_id`."""
    node = taxonomy.node(node_id)
    parts = [node.name, *node.synonyms, *taxonomy.path_names(node_id), *kb.visible_features(node_id)]
    if original_label:
        parts.append(original_label)
    return " ".join(dict.fromkeys(parts))


def candidate_nodes(node_id: str, taxonomy: Taxonomy, neighbours: Sequence[str]) -> list[str]:
    """Labelled node, its ancestors nearest first, then its DDx neighbours (no duplicates)."""
    ancestors = taxonomy.path(node_id)[-2::-1]
    return list(dict.fromkeys([node_id, *ancestors, *neighbours]))


def rank_candidates(
    scores: Sequence[float], passages: Sequence[Passage], candidates: Iterable[str], top_k: int
) -> list[Retrieved]:
    """The `top_k` best-scoring passages whose node is a candidate; ties keep knowledge-base order."""
    wanted = set(candidates)
    order = sorted((i for i, p in enumerate(passages) if p.node_id in wanted), key=lambda i: (-scores[i], i))
    return [
        Retrieved(rank, float(scores[i]), passages[i].node_id, passages[i].section, passages[i].source, passages[i].text)
        for rank, i in enumerate(order[: max(top_k, 0)], start=1)
    ]


class PassageIndex:
    """A BM25 index over every passage of a knowledge base."""

    def __init__(self, passages: Sequence[Passage]):
        from rank_bm25 import BM25Okapi

        self.passages = list(passages)
        # BM25Okapi divides by the corpus size; an empty knowledge base simply retrieves nothing.
        documents = [tokenize(f"{p.name} {p.section} {p.text}") for p in self.passages]
        self._bm25 = BM25Okapi(documents) if documents else None

    @classmethod
    def from_knowledge_base(cls, kb: KnowledgeBase) -> "PassageIndex":
        return cls(kb.passages())

    def scores(self, query: str) -> list[float]:
        if self._bm25 is None:
            return []
        return [float(s) for s in self._bm25.get_scores(tokenize(query))]

    def retrieve(self, query: str, candidates: Iterable[str], top_k: int) -> list[Retrieved]:
        return rank_candidates(self.scores(query), self.passages, candidates, top_k)
