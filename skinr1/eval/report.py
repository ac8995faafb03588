"""Evaluation report files: report.json, report.md and report.png (per-level and per-skin-type accuracy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    from skinr1.data.records import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "figure": out / "report.png"}
    write_text_atomic(paths["json"], json.dumps(report, indent=2))
    write_text_atomic(paths["markdown"], format_markdown(report))
    plot_report(report, paths["figure"])
    return paths


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (checkpoint, dataset) with the headline metrics."""
    rows = []
    for name, checkpoint in report["checkpoints"].items():
        for dataset, m in checkpoint["datasets"].items():
            rows.append({
                "checkpoint": name,
                "dataset": dataset,
                "n": m["n"],
                **{f"L{level}": acc for level, acc in m["accuracy_by_level"].items()},
                "leaf": m["leaf_accuracy"],
                "macro_f1": m["macro_f1"],
                "malignancy": m["malignancy_accuracy"],
                "parse_fail": m["parse_failure_rate"],
                "skin_gap": m["skin_type_gap"],
            })
    return rows


def format_table(report: dict[str, Any]) -> str:
    rows = summary_rows(report)
    if not rows:
        return "(no results)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    header = " | ".join(columns)
    lines = [f"| {header} |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_markdown(report: dict[str, Any]) -> str:
    lines = [f"# SkinR1 evaluation ({report.get('mode', 'open')} questions)", "", format_table(report), ""]
    for name, checkpoint in report["checkpoints"].items():
        lines += [f"## {name}", "", f"checkpoint: `{checkpoint['path']}`", ""]
        for dataset, m in checkpoint["datasets"].items():
            types = ", ".join(f"type {t}: {v['leaf_accuracy']:.3f} (n={v['n']})" for t, v in m["by_skin_type"].items())
            lines.append(f"- **{dataset}**: by Fitzpatrick skin type: {types or 'n/a'}")
        lines.append("")
    lines.append("![accuracy](report.png)")
    return "\n".join(lines) + "\n"


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["checkpoints"])
    figure, (levels_axis, skin_axis) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(names))
    ticks: tuple[set[int], set[int]] = (set(), set())
    for index, name in enumerate(names):
        merged_levels, merged_types = _merge_datasets(report["checkpoints"][name]["datasets"])
        offset = (index - (len(names) - 1) / 2) * width  # the checkpoints' bars side by side, centred on the tick
        levels = sorted(merged_levels, key=int)
        levels_axis.bar([int(l) + offset for l in levels], [merged_levels[l] for l in levels], width, label=name)
        types = sorted(merged_types, key=int)
        skin_axis.bar([int(t) + offset for t in types], [merged_types[t] for t in types], width, label=name)
        ticks[0].update(int(l) for l in levels)
        ticks[1].update(int(t) for t in types)
    levels_axis.set_xticks(sorted(ticks[0]))
    skin_axis.set_xticks(sorted(ticks[1]))
    levels_axis.set(title="accuracy per taxonomy level", xlabel="level (1 = category)", ylabel="accuracy", ylim=(0, 1))
    skin_axis.set(title="label accuracy per Fitzpatrick skin type", xlabel="skin type", ylim=(0, 1))
    levels_axis.legend()
    figure.tight_layout()
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    temporary.replace(path)


def _merge_datasets(datasets: dict[str, dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Sample-weighted averages over datasets, for the figure."""
    level_hits: dict[str, float] = {}
    level_n: dict[str, float] = {}
    type_hits: dict[str, float] = {}
    type_n: dict[str, float] = {}
    for m in datasets.values():
        for level, acc in m["accuracy_by_level"].items():
            level_hits[level] = level_hits.get(level, 0) + acc * m["n"]
            level_n[level] = level_n.get(level, 0) + m["n"]
        for skin_type, row in m["by_skin_type"].items():
            type_hits[skin_type] = type_hits.get(skin_type, 0) + row["leaf_accuracy"] * row["n"]
            type_n[skin_type] = type_n.get(skin_type, 0) + row["n"]
    return (
        {k: level_hits[k] / level_n[k] for k in level_hits if level_n[k]},
        {k: type_hits[k] / type_n[k] for k in type_hits if type_n[k]},
    )
