"""Diagnostic metrics as pure functions of (ground-truth node, prediction) pairs.

Definitions (per dataset):
- accuracy at level L: over records whose label is at least L deep, the share whose prediction
  has the label's ancestor at depth L on its path. An unparsable answer, or a prediction shallower
  than L, is wrong.
- label ("leaf") accuracy: the prediction is the label's node or a subtype of it (a subtype is
  more specific and still true). For leaf-labelled test sets this is leaf accuracy.
- macro-F1 over label nodes, with the same "node or subtype" matching.
- malignancy accuracy: the stated class (answer's parentheses), else the predicted node's class,
  equals the label's class.
- parse-failure rate: no single answer block, or an answer the taxonomy cannot resolve.
- per Fitzpatrick skin type: n and label accuracy, plus the gap between the best and worst type.

Each accuracy also carries a 95% percentile-bootstrap interval ("ci"), and the per-record outcomes
behind them ("per_record") are kept so that checkpoints can be compared record by record and
datasets pooled (skinr1.eval.report).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from skinr1.eval.bootstrap import bootstrap_ci
from skinr1.taxonomy import Taxonomy


@dataclass(frozen=True)
class Prediction:
    """One evaluated record."""

    record_id: str
    label: str
    """Ground-truth node id."""
    predicted: str | None
    """Predicted node id; None when the completion could not be parsed or resolved."""
    stated_malignancy: str | None = None
    """Malignancy class written in the answer, if any."""
    fitzpatrick_type: int | None = None
    """Skin type 1-6 of the image, when known."""
    dataset: str = "default"
    """Dataset (manifest) the record belongs to."""
    format_ok: bool = True
    """Whether the completion followed the answer format."""


def _safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def label_correct(taxonomy: Taxonomy, prediction: Prediction) -> bool:
    return prediction.predicted is not None and taxonomy.is_ancestor(prediction.label, prediction.predicted)


def level_outcomes(taxonomy: Taxonomy, prediction: Prediction) -> list[bool]:
    """One outcome per level of the label's path (level 1 first): the prediction has the label's ancestor there."""
    predicted_path = taxonomy.path(prediction.predicted) if prediction.predicted is not None else []
    return [
        depth < len(predicted_path) and predicted_path[depth] == ancestor
        for depth, ancestor in enumerate(taxonomy.path(prediction.label))
    ]


def accuracy_by_level(taxonomy: Taxonomy, predictions: Sequence[Prediction]) -> dict[str, float]:
    hits: dict[int, int] = defaultdict(int)
    totals: dict[int, int] = defaultdict(int)
    for p in predictions:
        for level, hit in enumerate(level_outcomes(taxonomy, p), start=1):
            totals[level] += 1
            hits[level] += hit
    return {str(level): _safe_ratio(hits[level], totals[level]) for level in sorted(totals)}


def macro_f1(taxonomy: Taxonomy, predictions: Sequence[Prediction]) -> float:
    classes = sorted({p.label for p in predictions})
    if not classes:
        return 0.0
    scores = []
    for cls in classes:
        tp = fp = fn = 0
        for p in predictions:
            predicted_cls = p.predicted is not None and taxonomy.is_ancestor(cls, p.predicted)
            if p.label == cls and predicted_cls:
                tp += 1
            elif p.label == cls:
                fn += 1
            elif predicted_cls:
                fp += 1
        precision, recall = _safe_ratio(tp, tp + fp), _safe_ratio(tp, tp + fn)
        scores.append(_safe_ratio(2 * precision * recall, precision + recall))
    return sum(scores) / len(scores)


def malignancy_correct(taxonomy: Taxonomy, prediction: Prediction) -> bool:
    stated = prediction.stated_malignancy
    if stated is None and prediction.predicted is not None:
        stated = taxonomy.malignancy(prediction.predicted)
    return stated is not None and stated == taxonomy.malignancy(prediction.label)


def by_skin_type(taxonomy: Taxonomy, predictions: Sequence[Prediction]) -> tuple[dict[str, dict], float | None]:
    """Per skin type {n, leaf_accuracy}; and best-minus-worst accuracy (None with < 2 types)."""
    groups: dict[int, list[Prediction]] = defaultdict(list)
    for p in predictions:
        if p.fitzpatrick_type is not None:
            groups[p.fitzpatrick_type].append(p)
    table = {
        str(skin_type): {
            "n": len(members),
            "leaf_accuracy": _safe_ratio(sum(label_correct(taxonomy, p) for p in members), len(members)),
        }
        for skin_type, members in sorted(groups.items())
    }
    accuracies = [row["leaf_accuracy"] for row in table.values()]
    gap = max(accuracies) - min(accuracies) if len(accuracies) >= 2 else None
    return table, gap


def record_outcomes(taxonomy: Taxonomy, predictions: Sequence[Prediction]) -> dict:
    """Per-record 0/1 outcomes, column-wise: entry i of every list belongs to predictions[i].

    {"record_id": [...], "label": [truth node], "predicted": [node or None], "leaf": [...],
    "malignancy": [...], "levels": {level: [0, 1 or None]}, "skin_type": [1-6 or None]}. A level's
    entry is None for a record whose label is shallower than that level (accuracy_by_level does not
    count it). Columns of small ints keep report.json small; label and prediction give confusions.
    """
    per_level = [level_outcomes(taxonomy, p) for p in predictions]
    depth = max(map(len, per_level), default=0)
    return {
        "record_id": [p.record_id for p in predictions],
        "label": [p.label for p in predictions],
        "predicted": [p.predicted for p in predictions],
        "leaf": [int(label_correct(taxonomy, p)) for p in predictions],
        "malignancy": [int(malignancy_correct(taxonomy, p)) for p in predictions],
        "levels": {
            str(level): [int(hits[level - 1]) if len(hits) >= level else None for hits in per_level]
            for level in range(1, depth + 1)
        },
        "skin_type": [p.fitzpatrick_type for p in predictions],
    }


def grouped_outcomes(per_record: dict) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """From `record_outcomes`: level -> outcomes of the records that have that level, and
    skin type -> leaf outcomes of the records of that type (types in ascending order)."""
    levels = {level: [hit for hit in hits if hit is not None] for level, hits in per_record["levels"].items()}
    skin_types: dict[int, list[int]] = defaultdict(list)
    for skin_type, hit in zip(per_record["skin_type"], per_record["leaf"]):
        if skin_type is not None:
            skin_types[skin_type].append(hit)
    return levels, {str(skin_type): skin_types[skin_type] for skin_type in sorted(skin_types)}


def accuracy_intervals(per_record: dict) -> dict:
    """95% bootstrap interval [low, high] of each accuracy, keyed like the metrics themselves:
    {"leaf_accuracy", "malignancy_accuracy", "accuracy_by_level": {level}, "by_skin_type": {type}}."""
    levels, skin_types = grouped_outcomes(per_record)
    return {
        "leaf_accuracy": list(bootstrap_ci(per_record["leaf"])),
        "malignancy_accuracy": list(bootstrap_ci(per_record["malignancy"])),
        "accuracy_by_level": {level: list(bootstrap_ci(hits)) for level, hits in levels.items()},
        "by_skin_type": {skin_type: list(bootstrap_ci(hits)) for skin_type, hits in skin_types.items()},
    }


def dataset_metrics(taxonomy: Taxonomy, predictions: Sequence[Prediction]) -> dict:
    """Every metric for one dataset's predictions, with their intervals ("ci") and per-record outcomes."""
    n = len(predictions)
    outcomes = record_outcomes(taxonomy, predictions)
    skin_types, gap = by_skin_type(taxonomy, predictions)
    return {
        "n": n,
        "accuracy_by_level": accuracy_by_level(taxonomy, predictions),
        "leaf_accuracy": _safe_ratio(sum(outcomes["leaf"]), n),
        "macro_f1": macro_f1(taxonomy, predictions),
        "malignancy_accuracy": _safe_ratio(sum(outcomes["malignancy"]), n),
        "parse_failure_rate": _safe_ratio(sum(p.predicted is None for p in predictions), n),
        "format_error_rate": _safe_ratio(sum(not p.format_ok for p in predictions), n),
        "by_skin_type": skin_types,
        "skin_type_gap": gap,
        "ci": accuracy_intervals(outcomes),
        "per_record": outcomes,
    }


def metrics_by_dataset(taxonomy: Taxonomy, predictions: Iterable[Prediction]) -> dict[str, dict]:
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        groups[p.dataset].append(p)
    return {name: dataset_metrics(taxonomy, members) for name, members in sorted(groups.items())}
