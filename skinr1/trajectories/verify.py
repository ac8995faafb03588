"""Verification of a trajectory: pure checks, each answering "ok" or a reason code.

A trajectory is kept only when every check passes; otherwise it is written to rejects.jsonl with
the first failing reason (and all of them in ``reasons``), so a bad teacher run shows up as counts
per reason instead of a silently smaller SFT set. The completion is read with the shared parser
(`skinr1.prompts.parse_completion`), the same one the rewards use, so SFT data and RL agree on what
a well-formed answer is.

Disease and group names in the reasoning are found by `NameMatcher` (longest match first, so
"malignant melanoma" is one mention, not "malignant" + "melanoma") and then classified:

* on the answer's path (the answer or one of its ancestors): a hierarchy statement, fine;
* a DDx neighbour of the answer: a cited differential, fine;
* for the random-DDx types, the planned differential (drawn outside the DDx graph): cited, fine;
* an ancestor of a cited differential: context for the differential ("a benign mimic"), fine;
* any other group above the answer's level: a wrong hierarchy statement ("hierarchy_not_ancestor");
* a subtype of the answer: more specific than the label ("hierarchy_below_answer");
* any other disease: a differential that is not a DDx neighbour ("differential_not_neighbour").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from skinr1.prompts import AnswerFormat, ParsedCompletion, parse_completion, resolve_answer
from skinr1.taxonomy import Taxonomy, normalize_label
from skinr1.taxonomy.normalize import singular_variants
from skinr1.trajectories.ddx import are_neighbours
from skinr1.trajectories.kinds import DDX_TYPES, RANDOM_DDX_TYPES, TRAJECTORY_TYPES

OK = "ok"
Graph = Mapping[str, tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class Mention:
    node_id: str
    text: str
    position: int
    """Index of the first word of the mention in the normalised reasoning."""


class NameMatcher:
    """Finds taxonomy names and synonyms in free text (word-aligned, longest match first).

    `ignore` lists names that reasoning uses as plain morphology words ("ulceration", "milia-like
    cysts"); they are dropped from the index (longer names containing them still match).
    """

    def __init__(self, taxonomy: Taxonomy, ignore: Iterable[str] = ()):
        skip = {normalize_label(term) for term in ignore}
        self.index = {tuple(name.split()): node_id for name, node_id in taxonomy.names().items() if name not in skip}
        self.skip = {tuple(term.split()) for term in skip}
        self.max_words = max((len(k) for k in self.index), default=0)

    def _lookup(self, words: tuple[str, ...]) -> str | None:
        hit = self.index.get(words)
        if hit is None and words not in self.skip:  # "melanocytic nevi", "carcinomas": the singular is the indexed name
            for variant in singular_variants(" ".join(words)):
                hit = self.index.get(tuple(variant.split()))
                if hit is not None:
                    break
        return hit

    def find(self, text: str) -> list[Mention]:
        words = normalize_label(text).split()
        mentions: list[Mention] = []
        i = 0
        while i < len(words):
            for size in range(min(self.max_words, len(words) - i), 0, -1):
                node_id = self._lookup(tuple(words[i : i + size]))
                if node_id is not None:
                    mentions.append(Mention(node_id, " ".join(words[i : i + size]), i))
                    i += size
                    break
            else:
                i += 1
        return mentions


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    """"ok" or the first failing check's reason code."""
    reasons: tuple[str, ...] = ()
    """Every failing check's reason code, in check order."""
    cited_differentials: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the checks
def check_format(parsed: ParsedCompletion) -> str:
    return OK if parsed.format_ok else f"format_{parsed.format_reason}"


def check_answer(parsed: ParsedCompletion, expected: str, taxonomy: Taxonomy) -> str:
    node_id, _ = resolve_answer(parsed, taxonomy, "open")
    if node_id is None:
        return "answer_missing" if not parsed.answer_text else "answer_unresolved"
    # A group named like a disease (taxonomy `name_means`: "malignant melanoma") can only be written
    # by that name, which resolves to the disease it denotes: the answer still names the label.
    return OK if node_id in (expected, taxonomy.node(expected).name_means) else "answer_wrong_node"


def check_malignancy(parsed: ParsedCompletion, expected: str, taxonomy: Taxonomy) -> str:
    if parsed.stated_malignancy is None:
        return "malignancy_missing"
    return OK if parsed.stated_malignancy == taxonomy.malignancy(expected) else "malignancy_wrong"


@dataclass(frozen=True)
class MentionReport:
    """Taxonomy nodes named in the reasoning, sorted by what they mean for the answer."""

    cited: tuple[str, ...] = ()
    """DDx neighbours of the answer, and the planned random differential if any (cited differentials)."""
    off_path_groups: tuple[str, ...] = ()
    """Groups/categories above the answer's level that are not its ancestors (wrong hierarchy)."""
    below_answer: tuple[str, ...] = ()
    """Subtypes of the answer: more specific than the label can confirm."""
    non_neighbours: tuple[str, ...] = ()
    """Other diseases: named as if differentials, but not DDx neighbours."""


def classify_mentions(
    mentions: Sequence[Mention], expected: str, taxonomy: Taxonomy, graph: Graph, planned: str | None = None
) -> MentionReport:
    """Sort mentions (see the module docstring). Ancestors of a cited differential are context for it.

    `planned` is a differential the plan chose outside the DDx graph (random-DDx types): naming it
    is citing it, not a stray disease.

    A stray internal node above the answer's depth ("malignant epidermal" in a nevus trajectory) is a
    hierarchy claim; a stray node at or below it ("melanoma" there) is a differential claim, whether
    or not the taxonomy gives it subtypes.
    """
    on_path = set(taxonomy.path(expected))
    # "malignant melanoma" names both a group and (clinically) the disease melanoma: read it as the
    # group where the trajectory is about the group (on the answer's path, or its differential).
    groups_by_name = taxonomy.groups_named_like_diseases()

    def reading(mention: Mention) -> str:
        group = groups_by_name.get(mention.text)
        if group is not None and (group in on_path or group == planned or are_neighbours(graph, expected, group)):
            return group
        return mention.node_id

    ids = list(dict.fromkeys(reading(m) for m in mentions))
    cited = tuple(n for n in ids if n not in on_path and (n == planned or are_neighbours(graph, expected, n)))
    allowed = on_path | {a for c in cited for a in taxonomy.path(c)}
    stray = [n for n in ids if n not in allowed]
    depth = taxonomy.depth(expected)
    below = tuple(n for n in stray if taxonomy.is_ancestor(expected, n))
    groups = tuple(n for n in stray if n not in below and not taxonomy.is_leaf(n) and taxonomy.depth(n) < depth)
    others = tuple(n for n in stray if n not in below and n not in groups)
    return MentionReport(cited, groups, below, others)


def check_hierarchy(report: MentionReport) -> str:
    if report.off_path_groups:
        return "hierarchy_not_ancestor"
    return "hierarchy_below_answer" if report.below_answer else OK


def check_differential(trajectory_type: str, report: MentionReport, planned: str | None = None) -> str:
    if report.non_neighbours:
        return "differential_not_neighbour"
    if trajectory_type in DDX_TYPES and not report.cited:
        return "no_differential_cited"
    # A random differential is the point of the type: citing some DDx neighbour instead is not it.
    if trajectory_type in RANDOM_DDX_TYPES and planned not in report.cited:
        return "random_differential_not_cited"
    return OK


# --------------------------------------------------------------------------- all together
def verify_completion(
    completion: str,
    expected: str,
    trajectory_type: str,
    taxonomy: Taxonomy,
    graph: Graph,
    matcher: NameMatcher,
    fmt: AnswerFormat,
    differential: str | None = None,
) -> Verdict:
    """Run every check on one completion for a record labelled `expected`.

    `differential` is the plan's differential; it is read only for the random-DDx types, whose
    differential is not in the DDx graph (the other types are checked against the graph alone).
    """
    if trajectory_type not in TRAJECTORY_TYPES:
        raise ValueError(f"unknown trajectory type {trajectory_type!r}")
    planned = differential if trajectory_type in RANDOM_DDX_TYPES else None
    if trajectory_type in RANDOM_DDX_TYPES and planned is None:
        raise ValueError(f"trajectory type {trajectory_type!r} needs the planned differential")
    parsed = parse_completion(completion, fmt)
    report = classify_mentions(matcher.find(parsed.reasoning), expected, taxonomy, graph, planned)
    results = (
        check_format(parsed),
        check_answer(parsed, expected, taxonomy),
        check_malignancy(parsed, expected, taxonomy),
        check_hierarchy(report),
        check_differential(trajectory_type, report, planned),
    )
    reasons = tuple(r for r in results if r != OK)
    details = {
        "answer": parsed.answer_text,
        "off_path_groups": list(report.off_path_groups),
        "below_answer": list(report.below_answer),
        "non_neighbours": list(report.non_neighbours),
    }
    return Verdict(not reasons, reasons[0] if reasons else OK, reasons, report.cited, details)
