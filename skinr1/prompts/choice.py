"""Multiple-choice options in the paper's form: some nodes of the ground-truth path plus distractors.

Offering several *correct* options at different depths (e.g. "malignant", "malignant melanoma",
"melanoma") is what lets the granularity reward prefer the most specific correct answer.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from skinr1.prompts.format import LETTER_PREFIX, OPTION_LETTERS
from skinr1.taxonomy import LabelResolver, Taxonomy

MAX_CORRECT_OPTIONS = 3
"""At most this many ground-truth path nodes are offered (the paper's 1..min(3, depth))."""



@dataclass(frozen=True)
class ChoiceOption:
    """One lettered option as shown to the model."""

    letter: str
    node_id: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChoiceOption":
        return cls(letter=str(data["letter"]), node_id=str(data["node_id"]), name=str(data["name"]))


def is_related(taxonomy: Taxonomy, a: str, b: str) -> bool:
    """True when one node lies on the other's path (then both are true of the same image)."""
    return taxonomy.is_ancestor(a, b) or taxonomy.is_ancestor(b, a)


def make_choice_options(
    taxonomy: Taxonomy,
    gt_node: str,
    distractor_pool: Iterable[str],
    rng: random.Random,
    n_options: int = len(OPTION_LETTERS),
) -> list[ChoiceOption]:
    """Lettered options: 1..min(3, depth) nodes of the ground-truth path plus distractors, shuffled.

    Distractors come from `distractor_pool` (node ids of the same source dataset's labels), minus
    anything on the ground-truth path or below it, which would also be a correct answer. When the
    pool is too small, siblings of path nodes and then any other unrelated node fill the gap, so a
    question always has `n_options` options where the taxonomy allows it. Deterministic given `rng`.
    """
    if not 1 <= n_options <= len(OPTION_LETTERS):
        raise ValueError(f"n_options must be 1..{len(OPTION_LETTERS)}")
    path = taxonomy.path(gt_node)  # raises KeyError for an unknown node
    n_correct = rng.randint(1, min(MAX_CORRECT_OPTIONS, len(path), n_options))
    correct = rng.sample(path, n_correct)

    # Sorted so that set-ordered pools (hash-seed dependent) cannot change the outcome.
    pool = sorted({d for d in distractor_pool if d in taxonomy and not is_related(taxonomy, d, gt_node)})
    distractors = rng.sample(pool, min(len(pool), n_options - n_correct))
    if len(distractors) < n_options - n_correct:
        distractors += _fallback_distractors(taxonomy, gt_node, set(distractors), n_options - n_correct - len(distractors), rng)

    chosen = correct + distractors
    rng.shuffle(chosen)
    return [ChoiceOption(letter, node_id, taxonomy.node(node_id).name) for letter, node_id in zip(OPTION_LETTERS, chosen)]


def _fallback_distractors(taxonomy: Taxonomy, gt_node: str, taken: set[str], needed: int, rng: random.Random) -> list[str]:
    path = taxonomy.path(gt_node)
    siblings = sorted({s for p in path for s in taxonomy.siblings(p)} - taken)
    others = sorted(set(taxonomy.nodes) - taken - set(siblings))
    picked: list[str] = []
    for tier in (siblings, others):
        tier = [n for n in tier if not is_related(taxonomy, n, gt_node)]
        picked += rng.sample(tier, min(len(tier), needed - len(picked)))
        if len(picked) == needed:
            break
    return picked


def correct_options(taxonomy: Taxonomy, gt_node: str, options: Sequence[ChoiceOption]) -> list[ChoiceOption]:
    """Options on the ground-truth path (a node deeper than the label is not known to be true)."""
    return [o for o in options if taxonomy.is_ancestor(o.node_id, gt_node)]


def format_options(options: Sequence[ChoiceOption]) -> str:
    return "\n".join(f"{o.letter}. {o.name}" for o in options)


def options_from_labels(resolver: LabelResolver, labels: Sequence[Any], source: str | None = None) -> list[ChoiceOption]:
    """Options given as texts ("B. basal cell carcinoma", dataset labels, node names) or dicts.

    Letters follow the given order; each text is resolved with `resolver` (using the dataset
    `source`). Raises ValueError naming the first option that does not resolve.
    """
    if len(labels) > len(OPTION_LETTERS):
        raise ValueError(f"at most {len(OPTION_LETTERS)} options are supported, got {len(labels)}")
    options: list[ChoiceOption] = []
    for letter, label in zip(OPTION_LETTERS, labels):
        # Node ids resolve like names (Taxonomy.find indexes them), so ids and names share one path.
        if isinstance(label, ChoiceOption):
            label = label.node_id
        elif isinstance(label, dict):
            label = label.get("node_id") or label.get("name") or label.get("label") or ""
        text = LETTER_PREFIX.sub("", str(label), count=1)
        hit = resolver.resolve(text, source=source)
        if hit.node_id is None:
            raise ValueError(f"option {letter} ({label!r}) does not resolve: {hit.reason}")
        options.append(ChoiceOption(letter, hit.node_id, resolver.taxonomy.node(hit.node_id).name))
    return options
