"""The `skinr1 data build` report: per-file counts, removals, duplicates, leak checks, accounting.

`make_report` summarises a finished build as the dict written to report.json; `render_text` turns
that dict into report.txt. Both are pure: they read the build's items and never touch files.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from skinr1.data.recipe import Recipe
from skinr1.taxonomy import Taxonomy

if TYPE_CHECKING:  # build.py imports this module; the type is only needed for annotations
    from skinr1.data.build import Item


def make_report(recipe: Recipe, items: list[Item], files: dict[str, list[Item]], taxonomy: Taxonomy,
                overlaps: dict[str, Any], conflicts: dict[str, Any], checks: dict[str, Any]) -> dict[str, Any]:
    """report.json's content: per-file counts (by dataset, level, skin type), removals, duplicates, OOD
    overlap, the leak check, and per-dataset accounting proving every input row was kept or removed."""
    accounting: dict[str, dict[str, Any]] = {}
    for spec, _ in recipe.all_datasets():
        accounting[spec.name] = {"manifest": str(recipe.manifest_path(spec)), "rows": 0, "kept": Counter(), "removed": Counter()}
    for name, members in files.items():
        for item in members:
            accounting[item.spec.name]["kept"][name] += 1
    for item in items:
        entry = accounting[item.spec.name]
        entry["rows"] += 1
        if item.removed:
            entry["removed"][item.removed[0]] += 1
    for entry in accounting.values():
        entry["balanced"] = entry["rows"] == sum(entry["kept"].values()) + sum(entry["removed"].values())
        entry["kept"], entry["removed"] = dict(entry["kept"]), dict(entry["removed"])
    per_file = {name: {"records": len(members),
                       "by_dataset": dict(Counter(i.spec.name for i in members)),
                       "by_level": {str(k): v for k, v in sorted(Counter(taxonomy.depth(i.record.node_id) for i in members).items())},
                       "by_fitzpatrick": dict(sorted(Counter(str(i.record.fitzpatrick_type or "unknown") for i in members).items()))}
                for name, members in files.items()}
    removed = [i for i in items if i.removed]
    duplicates = [i for i in removed if i.removed[0] == "duplicate"]
    ood_files = sorted(name for name in files if name.startswith("test_ood_"))
    return {
        "recipe": recipe.to_dict(),
        "rows": len(items),
        "files": per_file,
        "ood_test_files": ood_files,
        "hint": f"add the OOD sets to data.test, e.g. data.test=[test.jsonl,test_sparse.jsonl,{','.join(ood_files)}]"
        if ood_files else "",
        "removed": dict(Counter(i.removed[0] for i in removed)),
        "duplicates": {"removed": len(duplicates), "by_key": dict(Counter(i.removed[2] for i in duplicates)),
                       "label_conflicts": conflicts,
                       "examples": [{"removed": i.record.record_id, "kept": i.removed[1], "by": i.removed[2]} for i in duplicates[:10]]},
        "ood_overlap": overlaps,
        "leakage_check": checks,
        "accounting": accounting,
        "all_rows_accounted": all(e["balanced"] for e in accounting.values()),
    }


def render_text(report: dict[str, Any]) -> str:
    lines = [f"skinr1 data build: {report['rows']} input rows", "", "files:"]
    for name, info in report["files"].items():
        levels = ", ".join(f"L{k}: {v}" for k, v in info["by_level"].items())
        lines.append(f"  {name:<28} {info['records']:>7}   {levels}")
        lines.append(f"  {'':<28} datasets: {info['by_dataset']}  fitzpatrick: {info['by_fitzpatrick']}")
    lines += ["", f"removed: {report['removed'] or 'none'} (every removal, with the record it refers to: removed.jsonl)",
              f"duplicates: {report['duplicates']['removed']} removed by {report['duplicates']['by_key']}; "
              f"label conflicts between copies: {report['duplicates']['label_conflicts']['count']}",
              f"OOD overlap ({report['ood_overlap']['policy']}): {report['ood_overlap']['in_domain_records']} in-domain records",
              f"leakage check: {'passed' if report['leakage_check']['passed'] else 'FAILED'} "
              + ", ".join(f"{k}: {v['keys_checked']} keys, {v['crossing_splits']} crossing" for k, v in report['leakage_check']['by_key'].items()),
              f"every row accounted for: {report['all_rows_accounted']}"]
    for name, entry in report["accounting"].items():
        lines.append(f"  {name}: {entry['rows']} rows -> kept {entry['kept']} removed {entry['removed']}")
    if report["hint"]:
        lines += ["", report["hint"]]
    return "\n".join(lines) + "\n"
