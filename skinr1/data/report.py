"""What `skinr1 data prepare` found: counts per node, level and reason, as JSON and readable text.

The report is the audit trail of a dataset conversion: every input row ends up counted exactly
once, as a bad row (with its line number), an unmapped record, a record whose image is missing,
outside the images folder or unreadable, or a usable record in the manifest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from skinr1.data.readers import BadRow
from skinr1.data.records import Record
from skinr1.taxonomy import Taxonomy, normalize_label

EXAMPLES = 10  # how many example rows/paths each section keeps

# Reject kinds that are about the image rather than the label.
MISSING = "missing_image"
OUTSIDE = "outside_images"
UNMAPPED = "unmapped"


@dataclass
class NodeStats:
    count: int = 0  # mapped records with this node
    usable: int = 0  # ... whose image is present and readable
    original_labels: Counter = field(default_factory=Counter)
    source_paths: Counter = field(default_factory=Counter)


class PrepareReport:
    """Accumulates outcomes while `prepare` runs; `to_dict`/`to_text` render the result."""

    def __init__(self, taxonomy: Taxonomy, header: dict[str, Any]):
        self.taxonomy = taxonomy
        self.header = dict(header)
        self.bad_rows: list[BadRow] = []
        self.records = 0
        self.nodes: dict[str, NodeStats] = defaultdict(NodeStats)
        self.unmapped: Counter = Counter()  # (label, reason) -> count
        self.image_problems: Counter = Counter()  # kind -> count
        self.image_examples: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.usable = 0
        self.fitzpatrick: Counter = Counter()
        self.splits: Counter = Counter()
        self.hierarchy = Counter()  # consistent / inconsistent
        self.hierarchy_mismatches: Counter = Counter()  # (source path, taxonomy path) -> count
        self.duplicates = 0

    # ----------------------------------------------------------------- accumulation
    def add_bad_row(self, bad: BadRow) -> None:
        self.bad_rows.append(bad)

    def add_record(self, record: Record) -> None:
        """Count a parsed record's label-side facts (called once per record, mapped or not)."""
        self.records += 1
        self.fitzpatrick[str(record.fitzpatrick_type) if record.fitzpatrick_type else "unknown"] += 1
        self.splits[record.split] += 1
        if record.node_id is None:
            self.unmapped[(record.original_label, record.extra.get("unmapped_reason", "unmapped"))] += 1
            return
        stats = self.nodes[record.node_id]
        stats.count += 1
        stats.original_labels[record.original_label] += 1
        source_path = record.extra.get("source_path")
        if source_path:
            stats.source_paths[" > ".join(source_path)] += 1
            self._check_hierarchy(list(source_path), record.node_id)

    def add_image_outcome(self, record: Record, kind: str | None, reason: str | None = None) -> None:
        """Count the image outcome of a mapped record: kind None means present and readable."""
        if kind is None:
            self.usable += 1
            self.nodes[record.node_id].usable += 1
            return
        self.image_problems[kind] += 1
        examples = self.image_examples[kind]
        if len(examples) < EXAMPLES:
            examples.append({"record_id": record.record_id, "image": record.image, "reason": reason or kind})

    def _check_hierarchy(self, source_path: list[str], node_id: str) -> None:
        """Does the dataset's own coarse labelling agree with the taxonomy path of the node?"""
        path = self.taxonomy.path(node_id)
        consistent = len(path) >= len(source_path) and all(
            self._same_node(label, node) for label, node in zip(source_path, path)
        )
        self.hierarchy["consistent" if consistent else "inconsistent"] += 1
        if not consistent:
            self.hierarchy_mismatches[(" > ".join(source_path), " > ".join(self.taxonomy.path_names(node_id)))] += 1

    def _same_node(self, label: str, node_id: str) -> bool:
        key = normalize_label(label)
        node = self.taxonomy.node(node_id)
        return key in (normalize_label(node_id), normalize_label(node.name)) or self.taxonomy.find(label) == node_id

    # ----------------------------------------------------------------- rendering
    def to_dict(self) -> dict[str, Any]:
        mapped = sum(s.count for s in self.nodes.values())
        per_level: Counter = Counter()
        for node_id, stats in self.nodes.items():
            per_level[str(self.taxonomy.depth(node_id))] += stats.count
        bad_kinds = Counter(b.kind for b in self.bad_rows)
        missing = self.image_problems.get(MISSING, 0)
        outside = self.image_problems.get(OUTSIDE, 0)
        unreadable = {k: v for k, v in self.image_problems.items() if k not in (MISSING, OUTSIDE)}
        return {
            **self.header,
            "total_rows": self.records + len(self.bad_rows),
            "records": self.records,
            "mapped": mapped,
            "unmapped": self.records - mapped,
            "usable": self.usable,
            "rejected": (self.records - mapped) + sum(self.image_problems.values()),
            "per_level": dict(sorted(per_level.items())),
            "per_node": {
                node_id: {
                    "count": stats.count,
                    "usable": stats.usable,
                    "depth": self.taxonomy.depth(node_id),
                    "malignancy": self.taxonomy.malignancy(node_id),
                    "path": self.taxonomy.path_names(node_id),
                    "path_ids": self.taxonomy.path(node_id),
                    "original_labels": dict(stats.original_labels.most_common()),
                    **({"source_paths": dict(stats.source_paths.most_common())} if stats.source_paths else {}),
                }
                for node_id, stats in sorted(self.nodes.items(), key=lambda item: (-item[1].count, item[0]))
            },
            "unmapped_labels": [
                {"label": label, "count": count, "reason": reason}
                for (label, reason), count in self.unmapped.most_common()
            ],
            "images": {
                "checked_decode": bool(self.header.get("check_images")),
                "usable": self.usable,
                "missing": missing,
                "missing_examples": [e["image"] for e in self.image_examples.get(MISSING, [])],
                "outside_images": outside,
                "outside_examples": [e["image"] for e in self.image_examples.get(OUTSIDE, [])],
                "unreadable": sum(unreadable.values()),
                "unreadable_by_reason": dict(sorted(unreadable.items())),
                "unreadable_examples": [e for k in sorted(unreadable) for e in self.image_examples[k]],
            },
            "bad_rows": {
                "count": len(self.bad_rows),
                "by_kind": dict(bad_kinds.most_common()),
                "examples": [b.to_dict() for b in self.bad_rows[:EXAMPLES]],
            },
            "hierarchy_check": {
                "description": "dataset's own coarse labels (e.g. Fitzpatrick17k three/nine partitions) vs taxonomy path",
                "checked": sum(self.hierarchy.values()),
                "consistent": self.hierarchy.get("consistent", 0),
                "inconsistent": self.hierarchy.get("inconsistent", 0),
                "mismatches": [
                    {"source_path": source, "taxonomy_path": taxonomy, "count": count}
                    for (source, taxonomy), count in self.hierarchy_mismatches.most_common()
                ],
            },
            "fitzpatrick_types": dict(sorted(self.fitzpatrick.items())),
            "splits": dict(sorted(self.splits.items())),
        }


def render_text(report: dict[str, Any]) -> str:
    """A readable summary of `PrepareReport.to_dict()` output."""
    lines = [
        f"SkinR1 dataset preparation: {report.get('source')}",
        f"  manifest   {report.get('manifest')}",
        f"  images     {report.get('images_dir')}",
        f"  output     {report.get('out_dir')}",
        "",
        f"rows          {report['total_rows']:>8}",
        f"  bad rows    {report['bad_rows']['count']:>8}",
        f"  records     {report['records']:>8}",
        f"    mapped    {report['mapped']:>8}",
        f"    unmapped  {report['unmapped']:>8}",
        f"images of mapped records ({'decoded' if report['images']['checked_decode'] else 'existence only'})",
        f"  usable      {report['images']['usable']:>8}   -> manifest.jsonl",
        f"  missing     {report['images']['missing']:>8}",
        f"  outside     {report['images'].get('outside_images', 0):>8}   (path leaves the images folder)",
        f"  unreadable  {report['images']['unreadable']:>8}",
        f"rejected      {report['rejected']:>8}   -> rejected.jsonl",
        "",
        "records per level (1 = category, 2 = group, 3+ = disease):",
    ]
    lines += [f"  level {level}: {count}" for level, count in report["per_level"].items()]
    lines += ["", "records per node (usable/mapped)  path:"]
    for node_id, info in report["per_node"].items():
        lines.append(f"  {info['usable']:>6}/{info['count']:<6} {' > '.join(info['path'])}  [{node_id}]")
    if report["unmapped_labels"]:
        lines += ["", "unmapped labels:"]
        lines += [f"  {u['count']:>6}  {u['label']!r}: {u['reason']}" for u in report["unmapped_labels"]]
    images = report["images"]
    if images["missing"]:
        lines += ["", f"missing images ({images['missing']}), e.g.:"] + [f"  {p}" for p in images["missing_examples"]]
    if images.get("outside_images"):
        lines += ["", f"images outside the images folder ({images['outside_images']}), refused, e.g.:"]
        lines += [f"  {p}" for p in images["outside_examples"]]
    if images["unreadable"]:
        lines += ["", "unreadable images by reason:"]
        lines += [f"  {count:>6}  {kind}" for kind, count in images["unreadable_by_reason"].items()]
        lines += [f"  e.g. {e['image']}: {e['reason']}" for e in images["unreadable_examples"][:EXAMPLES]]
    if report["bad_rows"]["count"]:
        lines += ["", "bad rows by kind:"]
        lines += [f"  {count:>6}  {kind}" for kind, count in report["bad_rows"]["by_kind"].items()]
        lines += [f"  e.g. line {b['line']}: {b['reason']}" for b in report["bad_rows"]["examples"]]
    check = report["hierarchy_check"]
    if check["checked"]:
        lines += ["", f"dataset hierarchy vs taxonomy: {check['consistent']}/{check['checked']} consistent"]
        lines += [f"  {m['count']:>6}  {m['source_path']}  vs  {m['taxonomy_path']}" for m in check["mismatches"]]
    lines += ["", "Fitzpatrick types: " + ", ".join(f"{k}: {v}" for k, v in report["fitzpatrick_types"].items())]
    lines += ["splits: " + ", ".join(f"{k}: {v}" for k, v in report["splits"].items())]
    if "elapsed_s" in report:
        lines += [f"elapsed: {report['elapsed_s']:.2f} s"]
    return "\n".join(lines) + "\n"
