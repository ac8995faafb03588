"""Output rows (SFT conversations and rejects) and the build report (JSON and text)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

from skinr1.prompts import OPEN_QUESTIONS, build_messages
from skinr1.trajectories.context import Context, Job
from skinr1.trajectories.kinds import BASE_TYPES, TRAJECTORY_TYPES
from skinr1.trajectories.plan import stable_unit
from skinr1.trajectories.verify import Verdict


def sft_row(
    job: Job, completion: str, verdict: Verdict, writer: str, context: Context, seed: int, include_system: bool, cache_hit: bool
) -> dict[str, Any]:
    """One SFT example in chat format: system?, user (image + question), assistant (the trajectory)."""
    record, plan, taxonomy = job.record, job.plan, context.taxonomy
    variant = int(stable_unit(seed, record.record_id, "question") * len(OPEN_QUESTIONS))
    messages = build_messages("open", fmt=context.fmt, question_variant=variant)
    if not include_system:
        messages = [m for m in messages if m["role"] != "system"]
    messages.append({"role": "assistant", "content": [{"type": "text", "text": completion}]})
    return {
        "id": record.record_id,
        "image": record.image,
        "messages": messages,
        "metadata": {
            "node_id": job.node_id,
            "node_path": taxonomy.path(job.node_id),
            "label_depth": taxonomy.depth(job.node_id),
            "malignancy": taxonomy.malignancy(job.node_id),
            "source": record.source,
            "trajectory_type": plan.trajectory_type,
            "assigned_type": plan.assigned_type,
            "differential": plan.differential,
            "cited_differentials": list(verdict.cited_differentials),
            "ddx_source": plan.ddx_source,
            "retrieval": [r.to_metadata() for r in job.retrieved],
            "writer": writer,
            "cache_hit": cache_hit,
            "verified": True,
        },
    }


def reject_row(
    record_id: str,
    image: str,
    node_id: str | None,
    reason: str,
    writer: str,
    reasons: Sequence[str] = (),
    detail: Any = "",
    job: Job | None = None,
    completion: str | None = None,
) -> dict[str, Any]:
    return {
        "id": record_id,
        "image": image,
        "node_id": node_id,
        "trajectory_type": job.plan.trajectory_type if job else None,
        "differential": job.plan.differential if job else None,
        "reason": reason,
        "reasons": list(reasons) or [reason],
        "detail": detail,
        "writer": writer,
        "completion": completion,
    }


def build_report(
    rows: Sequence[dict], rejects: Sequence[dict], records_in: int, extra: dict[str, Any]
) -> dict[str, Any]:
    meta = [r["metadata"] for r in rows]
    per_type = Counter(m["trajectory_type"] for m in meta)
    # The random-DDx types are listed once planned, so reports of runs without them keep their shape.
    listed = set(BASE_TYPES) | set(per_type) | {r["trajectory_type"] for r in rejects}
    return {
        "totals": {
            "records": records_in,
            "accepted": len(rows),
            "rejected": len(rejects),
            "accept_rate": round(len(rows) / records_in, 4) if records_in else 0.0,
        },
        "per_type": {t: per_type.get(t, 0) for t in TRAJECTORY_TYPES if t in listed},
        "type_fallbacks": sum(1 for m in meta if m["assigned_type"] != m["trajectory_type"]),
        "per_node": dict(sorted(Counter(m["node_id"] for m in meta).items())),
        "ddx_sources": dict(sorted(Counter(m["ddx_source"] for m in meta).items())),
        "reject_reasons": dict(Counter(r["reason"] for r in rejects).most_common()),
        "reject_reasons_all": dict(Counter(x for r in rejects for x in r["reasons"]).most_common()),
        "rejects_per_type": dict(sorted(Counter(str(r["trajectory_type"]) for r in rejects).items())),
        **extra,
    }


def _block(title: str, counts: dict[str, Any]) -> Iterable[str]:
    yield f"{title}:"
    if not counts:
        yield "  (none)"
    width = max((len(str(k)) for k in counts), default=0)
    for key, value in counts.items():
        yield f"  {str(key):<{width}}  {value}"


def format_report(report: dict[str, Any]) -> str:
    totals = report["totals"]
    lines = [
        "SkinR1 trajectories report",
        "==========================",
        f"writer: {report.get('writer')}   input: {report.get('input')}",
        f"records {totals['records']}, accepted {totals['accepted']}, rejected {totals['rejected']} "
        f"(accept rate {totals['accept_rate']:.1%}); elapsed {report.get('elapsed_s')} s, "
        f"workers {report.get('workers')}",
        "",
        *_block("accepted per trajectory type", report["per_type"]),
        f"  (type fallbacks to direct: {report['type_fallbacks']})",
        *_block("accepted per node", report["per_node"]),
        *_block("DDx neighbour sources", report["ddx_sources"]),
        *_block("reject reasons (first failing check)", report["reject_reasons"]),
        *_block("reject reasons (all failing checks)", report["reject_reasons_all"]),
    ]
    if report.get("teacher"):
        lines += list(_block("teacher", report["teacher"]))
    return "\n".join(lines) + "\n"
