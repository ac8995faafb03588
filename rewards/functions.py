"""The reward terms as pure functions: each returns ``(score, reason_code)``.

They take already-parsed answers and already-resolved node ids, so each is a handful of dict
lookups; parsing and name resolution happen once per completion in `rewards.scoring`, which also
caches the per-(prediction, truth) results.
"""

from __future__ import annotations

import re
from typing import Sequence

from skinr1.prompts.parser import ParsedCompletion
from skinr1.taxonomy import Taxonomy, normalize_label

Score = tuple[float, str]


def format_reward(parsed: ParsedCompletion, weight: float) -> Score:
    """`weight` when the completion is exactly one reasoning block then one answer block."""
    return (weight, "ok") if parsed.format_ok else (0.0, parsed.format_reason)


def weighted_depth(depth: int, level_weights: Sequence[float] = ()) -> float:
    """Sum of the weights of levels 1..depth; the last level weight repeats; () = all 1."""
    if not level_weights:
        return float(depth)
    head = sum(level_weights[:depth])
    return head + max(0, depth - len(level_weights)) * level_weights[-1]


def path_credit(taxonomy: Taxonomy, pred: str, gt: str, level_weights: Sequence[float] = ()) -> Score:
    """Share of the truth's path the prediction gets right, in [0, 1].

    The weighted depth of LCA(pred, gt) over the weighted depth of gt. A prediction below the truth
    (a subtype of a coarse label) has the truth as LCA and gets full credit: the label does not say
    it is wrong, and penalising specificity would teach the model to answer coarsely.
    """
    lca = taxonomy.lca(pred, gt)
    if lca is None:
        return 0.0, "wrong_category"
    if lca == gt:
        return 1.0, "exact" if pred == gt else "more_specific"
    credit = weighted_depth(taxonomy.depth(lca), level_weights) / weighted_depth(taxonomy.depth(gt), level_weights)
    return credit, "ancestor" if lca == pred else "partial"


def hierarchical_reward(
    taxonomy: Taxonomy, pred: str | None, gt: str, weight: float, level_weights: Sequence[float] = (), why: str = "unresolved"
) -> Score:
    """Open mode: `weight` x `path_credit`; `why` is the reason when there is no prediction."""
    if pred is None:
        return 0.0, why
    credit, reason = path_credit(taxonomy, pred, gt, level_weights)
    return weight * credit, reason


def deepest_correct_depth(taxonomy: Taxonomy, option_nodes: Sequence[str], gt: str) -> int:
    """Depth of the deepest offered option on the truth's path (0 when none is correct)."""
    return max((taxonomy.depth(n) for n in option_nodes if taxonomy.is_ancestor(n, gt)), default=0)


def granularity_reward(
    taxonomy: Taxonomy, chosen: str | None, gt: str, deepest: int, weight: float, why: str = "no_choice"
) -> Score:
    """Choice mode (paper): `weight` x depth(chosen) / `deepest` for a correct option, 0 for a distractor.

    `deepest` is `deepest_correct_depth` of the offered options (passed in so callers can cache it).
    """
    if chosen is None:
        return 0.0, why
    if deepest <= 0 or not taxonomy.is_ancestor(chosen, gt):
        return 0.0, "distractor"
    depth = taxonomy.depth(chosen)
    return weight * min(1.0, depth / deepest), "deepest_correct" if depth >= deepest else "coarser_correct"


def collapse_malignancy(cls: str, classes: int = 4) -> str:
    """A taxonomy malignancy class as scored with `classes` classes (see RewardConfig.malignancy_classes).

    4 keeps every class; 3 (the paper's) reads "non-neoplastic" as "benign": a non-neoplastic
    condition is not a tumour, let alone a malignant one.
    """
    if classes == 4:
        return cls
    if classes == 3:
        return "benign" if cls == "non-neoplastic" else cls
    raise ValueError(f"malignancy classes must be 3 or 4, got {classes!r}")


def label_classes(taxonomy: Taxonomy, gt: str, classes: int = 4) -> frozenset[str]:
    """Malignancy classes consistent with a label: its own and those of every disease below it,
    each as `collapse_malignancy` maps it for `classes` classes.

    A coarse label (HAM10000's "akiec" -> malignant epidermal) covers subtypes of another class
    (actinic keratosis, precancerous); the image may be any of them, so each of their classes is
    right, exactly as a subtype of a coarse label earns full hierarchical credit.
    """
    own = (taxonomy.malignancy(gt), *(taxonomy.malignancy(d) for d in taxonomy.descendants(gt)))
    return frozenset(collapse_malignancy(c, classes) for c in own)


def malignancy_reward(
    taxonomy: Taxonomy,
    gt: str,
    stated: str | None,
    pred: str | None,
    weight: float,
    source: str = "stated",
    accepted: frozenset[str] | None = None,
    classes: int = 4,
) -> Score:
    """`weight` for a right malignancy class, read from the answer's parentheses and/or the predicted node.

    `source` is "stated", "node" or "stated_or_node" (see RewardConfig.malignancy_source);
    `classes` is 3 or 4 (see RewardConfig.malignancy_classes); `accepted` is
    `label_classes(taxonomy, gt, classes)` (passed in so callers can cache it).
    """
    if stated is not None and source != "node":
        claimed, how = stated, "stated"
    elif pred is not None and source != "stated":
        claimed, how = taxonomy.malignancy(pred), "node"
    else:
        return 0.0, "not_stated" if source == "stated" else "no_prediction"
    if accepted is None:
        accepted = label_classes(taxonomy, gt, classes)
    if collapse_malignancy(claimed, classes) in accepted:
        return weight, f"correct_{how}"
    return 0.0, f"wrong_{how}"


def ddx_pattern(taxonomy: Taxonomy, gt: str) -> re.Pattern[str] | None:
    """Regex matching any name or synonym of the truth's DDx neighbours in lower-cased text."""
    names: set[str] = set()
    for neighbour in taxonomy.ddx(gt):
        node = taxonomy.node(neighbour)
        names.update(filter(None, (normalize_label(n) for n in (node.name, *node.synonyms))))
    if not names:
        return None
    # Longest first so "basal cell carcinoma" wins over "carcinoma"; any punctuation between words.
    alternatives = "|".join(r"[^a-z0-9]+".join(map(re.escape, n.split())) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")


def differential_reward(reasoning: str, pattern: re.Pattern[str] | None, weight: float) -> Score:
    """`weight` when the reasoning names a DDx neighbour of the truth (`pattern` from `ddx_pattern`)."""
    if pattern is None:
        return 0.0, "no_known_ddx"
    if reasoning and pattern.search(reasoning.lower()):
        return weight, "named"
    return 0.0, "not_named"
