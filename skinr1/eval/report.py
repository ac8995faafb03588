"""Evaluation report files: report.json, report.md and report.png (per-level and per-skin-type accuracy).

Every accuracy is shown with its 95% percentile-bootstrap interval (skinr1.eval.bootstrap), and
consecutive checkpoints are compared by the paired interval of their difference
(`compare_checkpoints`): on a few hundred images, a difference of a few points is noise unless its
interval excludes 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from skinr1.eval.bootstrap import bootstrap_ci, paired_difference_ci
from skinr1.eval.metrics import grouped_outcomes

Estimate = tuple[float, float, float]
"""(accuracy, low, high) of one bar in the figure."""

COMPARISONS_TITLE = "Paired differences (95% bootstrap CI)"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png; adds report["comparisons"] first when absent."""
    from skinr1.data.records import write_text_atomic

    if "comparisons" not in report:
        compare_checkpoints(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "figure": out / "report.png"}
    write_text_atomic(paths["json"], dumps_readable(report))
    write_text_atomic(paths["markdown"], format_markdown(report))
    plot_report(report, paths["figure"])
    return paths


def dumps_readable(value: Any, indent: int = 2, depth: int = 0) -> str:
    """JSON indented like `json.dumps(indent=2)`, except that a list of plain values (the per-record
    outcome columns, intervals) stays on one line: a few hundred 0/1 outcomes per checkpoint and
    dataset would otherwise take a line each."""
    pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {dumps_readable(v, indent, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(f"{inner}{dumps_readable(v, indent, depth + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value)


# ---------------------------------------------------------------------------------------------
# Paired checkpoint comparisons


def compare_checkpoints(report: dict[str, Any], pairs: Sequence[tuple[str, str]] | None = None) -> list[dict]:
    """Paired bootstrap difference (later minus earlier) of every accuracy, per dataset and pair.

    `pairs` are (from, to) checkpoint names; by default each checkpoint against the one before it in
    report order (base -> sft -> rl). Records are matched by record id, so the two checkpoints are
    compared on exactly the images both answered. A dataset that only one checkpoint evaluated, or
    that lacks per-record outcomes (a report written before they existed), is skipped. The list,
    one dict {"from", "to", "dataset", "metric", "difference", "low", "high", "n"} per dataset and
    metric ("L1".., "leaf", "malignancy", as in the summary table), is stored as
    report["comparisons"] and returned.
    """
    names = list(report["checkpoints"])
    chosen = list(zip(names, names[1:])) if pairs is None else list(pairs)
    comparisons = []
    for source, target in chosen:
        before = report["checkpoints"][source]["datasets"]
        after = report["checkpoints"][target]["datasets"]
        for dataset in (d for d in before if d in after):
            old, new = before[dataset].get("per_record"), after[dataset].get("per_record")
            if old is None or new is None:
                continue
            for metric, (a, b) in paired_outcomes(old, new).items():
                comparisons.append({"from": source, "to": target, "dataset": dataset, "metric": metric,
                                    **paired_difference_ci(a, b), "n": len(a)})
    report["comparisons"] = comparisons
    return comparisons


def paired_outcomes(old: dict, new: dict) -> dict[str, tuple[list[int], list[int]]]:
    """Metric -> (old outcomes, new outcomes) over the records both per-record tables hold, aligned.

    A record counts for a level only where both tables have an outcome for it; metrics with no
    such record are left out.
    """
    new_position = {key: index for index, key in enumerate(_record_keys(new["record_id"]))}
    matches = [(i, new_position[key]) for i, key in enumerate(_record_keys(old["record_id"])) if key in new_position]
    old_columns, new_columns = _metric_columns(old), _metric_columns(new)
    paired = {}
    for metric in (m for m in old_columns if m in new_columns):
        outcomes = [(old_columns[metric][i], new_columns[metric][j]) for i, j in matches]
        outcomes = [(a, b) for a, b in outcomes if a is not None and b is not None]
        if outcomes:
            paired[metric] = ([a for a, _ in outcomes], [b for _, b in outcomes])
    return paired


def _record_keys(record_ids: list[str]) -> list[tuple[str, int]]:
    """(record id, occurrence) keys: should a manifest repeat an id, its k-th occurrence in one
    checkpoint pairs with its k-th occurrence in the other instead of all pairing with one."""
    seen: dict[str, int] = defaultdict(int)
    keys = []
    for record_id in record_ids:
        keys.append((record_id, seen[record_id]))
        seen[record_id] += 1
    return keys


def _metric_columns(per_record: dict) -> dict[str, list[int | None]]:
    """Per-record outcome columns under their summary-table names, in the table's column order."""
    levels = {f"L{level}": hits for level, hits in per_record["levels"].items()}
    return {**levels, "leaf": per_record["leaf"], "malignancy": per_record["malignancy"]}


# ---------------------------------------------------------------------------------------------
# Markdown


def _dataset_results(report: dict[str, Any]) -> Iterator[tuple[str, str, dict]]:
    for name, checkpoint in report["checkpoints"].items():
        for dataset, m in checkpoint["datasets"].items():
            yield name, dataset, m


def _summary_row(name: str, dataset: str, m: dict) -> dict[str, Any]:
    return {
        "checkpoint": name,
        "dataset": dataset,
        "n": m["n"],
        **{f"L{level}": acc for level, acc in m["accuracy_by_level"].items()},
        "leaf": m["leaf_accuracy"],
        "macro_f1": m["macro_f1"],
        "malignancy": m["malignancy_accuracy"],
        "parse_fail": m["parse_failure_rate"],
        "skin_gap": m["skin_type_gap"],
    }


def _row_intervals(m: dict) -> dict[str, list[float]]:
    """The summary row's accuracy intervals under its column names (none for older reports)."""
    ci = m.get("ci", {})
    intervals = {f"L{level}": interval for level, interval in ci.get("accuracy_by_level", {}).items()}
    intervals.update(leaf=ci.get("leaf_accuracy"), malignancy=ci.get("malignancy_accuracy"))
    return {column: interval for column, interval in intervals.items() if interval is not None}


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (checkpoint, dataset) with the headline metrics."""
    return [_summary_row(*result) for result in _dataset_results(report)]


def format_table(report: dict[str, Any]) -> str:
    """The summary table; accuracies read `estimate [low, high]` where the report has intervals."""
    results = list(_dataset_results(report))
    if not results:
        return "(no results)"
    rows = [_summary_row(*result) for result in results]
    intervals = [_row_intervals(m) for _, _, m in results]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(c), interval.get(c)) for c in columns] for row, interval in zip(rows, intervals)]
    return markdown_table(columns, cells)


def format_comparisons(report: dict[str, Any]) -> str:
    """The paired-difference table; "CI above 0" is "yes" when the whole interval lies above 0."""
    comparisons = report.get("comparisons") or []
    if not comparisons:
        return "(no paired comparisons)"
    columns = ["dataset", "from", "to", "metric", "n", "difference", "95% CI", "CI above 0"]
    cells = [
        [c["dataset"], c["from"], c["to"], c["metric"], str(c["n"]), f"{c['difference']:+.3f}",
         f"[{c['low']:+.3f}, {c['high']:+.3f}]", "yes" if c["low"] > 0 else "no"]
        for c in comparisons
    ]
    return markdown_table(columns, cells)


def markdown_table(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any, interval: Sequence[float] | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
    return str(value)


def format_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# SkinR1 evaluation ({report.get('mode', 'open')} questions)", "",
        "Accuracies: estimate [95% bootstrap CI].", "", format_table(report), "",
        f"## {COMPARISONS_TITLE}", "",
        "Difference = later minus earlier checkpoint over the records both answered; "
        "the interval resamples those records jointly for both.", "",
        format_comparisons(report), "",
    ]
    for name, checkpoint in report["checkpoints"].items():
        lines += [f"## {name}", "", f"checkpoint: `{checkpoint['path']}`", ""]
        for dataset, m in checkpoint["datasets"].items():
            intervals = m.get("ci", {}).get("by_skin_type", {})
            types = ", ".join(f"type {t}: {_cell(v['leaf_accuracy'], intervals.get(t))} (n={v['n']})"
                              for t, v in m["by_skin_type"].items())
            lines.append(f"- **{dataset}**: by Fitzpatrick skin type: {types or 'n/a'}")
        lines.append("")
    lines.append("![accuracy](report.png)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Figure


def pooled_accuracies(datasets: dict[str, dict]) -> tuple[dict[str, Estimate], dict[str, Estimate]]:
    """Per level and per skin type: accuracy and bootstrap interval over all datasets' records pooled.

    The interval is resampled from the pooled per-record outcomes: averaging per-dataset intervals
    would not be the interval of the merged set (two certain datasets at 1.0 and 0.0 average to a
    zero-width [0.5, 0.5]). Levels count only records whose label reaches that level.
    """
    levels: dict[str, list[int]] = defaultdict(list)
    skin_types: dict[str, list[int]] = defaultdict(list)
    for m in datasets.values():
        dataset_levels, dataset_types = grouped_outcomes(m["per_record"])
        for pooled, groups in ((levels, dataset_levels), (skin_types, dataset_types)):
            for key, hits in groups.items():
                pooled[key].extend(hits)
    return _estimates(levels), _estimates(skin_types)


def _estimates(groups: dict[str, list[int]]) -> dict[str, Estimate]:
    return {key: (sum(hits) / len(hits), *bootstrap_ci(hits)) for key, hits in groups.items() if hits}


def _bars(axis, estimates: dict[str, Estimate], offset: float, width: float, label: str) -> set[int]:
    """One checkpoint's bars with error bars from the intervals; returns the tick positions used."""
    keys = sorted(estimates, key=int)
    values = [estimates[k] for k in keys]
    # A percentile interval need not contain its estimate exactly, and matplotlib rejects negative error lengths.
    yerr = [[max(0.0, acc - low) for acc, low, _ in values], [max(0.0, high - acc) for acc, _, high in values]]
    axis.bar([int(k) + offset for k in keys], [acc for acc, _, _ in values], width, yerr=yerr, capsize=3, label=label)
    return {int(k) for k in keys}


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["checkpoints"])
    figure, (levels_axis, skin_axis) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(names))
    ticks: tuple[set[int], set[int]] = (set(), set())
    for index, name in enumerate(names):
        levels, skin_types = pooled_accuracies(report["checkpoints"][name]["datasets"])
        offset = (index - (len(names) - 1) / 2) * width  # the checkpoints' bars side by side, centred on the tick
        ticks[0].update(_bars(levels_axis, levels, offset, width, name))
        ticks[1].update(_bars(skin_axis, skin_types, offset, width, name))
    levels_axis.set_xticks(sorted(ticks[0]))
    skin_axis.set_xticks(sorted(ticks[1]))
    levels_axis.set(title="accuracy per taxonomy level (95% CI)", xlabel="level (1 = category)", ylabel="accuracy",
                    ylim=(0, 1))
    skin_axis.set(title="label accuracy per Fitzpatrick skin type (95% CI)", xlabel="skin type", ylim=(0, 1))
    levels_axis.legend()
    figure.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(path)
