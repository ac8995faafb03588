"""Pure functions of `bench_vs_trl.py`: per-step rows -> a system's summary -> the side-by-side table."""

from __future__ import annotations

from statistics import fmean
from typing import Any, NamedTuple, Sequence

PARTS = ("generate_s", "scoring_s", "reward_s", "train_s", "sync_s", "wait_s")
"""The step breakdown: generation, scoring passes (reference / old log-probs), reward, training, sync, waiting."""


def skinr1_rows(metrics: Sequence[dict[str, Any]], group_size: int) -> list[dict[str, Any]]:
    """SkinR1's metrics.jsonl rows in the common per-step form. The learner's reference pass runs
    inside its train call (not timed apart): scoring_s is None and train_s includes it."""
    rows = []
    for m in metrics:
        samples = int(m.get("samples", 0))
        rows.append({
            "step_s": m["step_s"], "generate_s": m["generate_s"], "scoring_s": None, "reward_s": m["reward_s"],
            "train_s": m["learn_s"], "sync_s": m["sync_s"], "wait_s": m["wait_s"],
            "samples": samples, "trained_samples": int(m.get("kept_groups", 0)) * group_size if m.get("trained", True) else 0,
            "tokens": round(samples * float(m.get("completion_len_mean", 0.0))),
        })
    return rows


def summarize(result: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Means over the steps after `warmup` (a crashed run: over the steps it finished, if any)."""
    rows = result.get("steps", [])[warmup:]
    summary = {"system": result["system"], "status": result.get("status", "ok"), "error": result.get("error"),
               "crashed_at_step": result.get("crashed_at_step"), "measured_steps": len(rows),
               "peak_rss_gib": result.get("peak_rss_gib")}
    if not rows:
        return summary
    seconds = sum(r["step_s"] for r in rows)
    summary.update(
        step_s=seconds / len(rows),
        generated_per_s=sum(r["samples"] for r in rows) / seconds,
        trained_per_s=sum(r["trained_samples"] for r in rows) / seconds,
        tokens_per_s=sum(r["tokens"] for r in rows) / seconds,
        tokens_per_sample=sum(r["tokens"] for r in rows) / max(1, sum(r["samples"] for r in rows)),
    )
    for part in PARTS:
        values = [r.get(part) for r in rows]
        summary[part] = None if any(v is None for v in values) else fmean(values)
    return summary


def pool_rounds(results: Sequence[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """One system's runs of several rounds as one result: every round's steps after its own
    `warmup`, the highest peak RSS; a crash in any round is the pooled result's status."""
    pooled = {"system": results[0]["system"], "status": "ok",
              "steps": [row for result in results for row in result.get("steps", [])[warmup:]],
              "peak_rss_gib": max((r.get("peak_rss_gib") or 0.0 for r in results), default=None)}
    for number, result in enumerate(results, start=1):
        if result.get("status", "ok") != "ok":
            pooled.update(status=result["status"], error=f"round {number}: {result.get('error')}",
                          crashed_at_step=result.get("crashed_at_step"))
            break
    return pooled


def speed_ratio(summaries: Sequence[dict[str, Any]]) -> float | None:
    """SkinR1's speed over the best TRL mode's (> 1: SkinR1 is faster), None without both."""
    over = ratios(summaries).get("skinr1_over_best_trl")
    return 1 / over if over else None


def best_trl(summaries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest TRL mode that finished every step."""
    done = [s for s in summaries if s["system"].startswith("trl-") and s["status"] == "ok" and s.get("step_s")]
    return min(done, key=lambda s: s["step_s"]) if done else None


class SkinR1System(NamedTuple):
    prefix: str
    """of the system's ratios: `skinr1_over_best_trl`, `overlap_over_floor`, ..."""
    label: str
    """its name in the ratio lines"""
    caveat: str = ""
    """said after its speed ratio to TRL"""


SKINR1_SYSTEMS = {
    "skinr1": SkinR1System("skinr1", "SkinR1"),
    "skinr1-overlap": SkinR1System("overlap", "SkinR1 with one-step overlap", "; one policy version behind"),
}


def ratios(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each SkinR1 system's step time over the best TRL mode's (< 1 means SkinR1 is faster) and
    over the floor's."""
    by_name = {s["system"]: s for s in summaries}
    floor, trl = by_name.get("floor"), best_trl(summaries)
    out: dict[str, Any] = {"best_trl": trl["system"] if trl else None}
    for system, (prefix, *_) in SKINR1_SYSTEMS.items():
        skinr1 = by_name.get(system)
        if not (skinr1 and skinr1.get("step_s") and skinr1["status"] == "ok"):
            continue
        if trl:
            out[f"{prefix}_over_best_trl"] = skinr1["step_s"] / trl["step_s"]
        if floor and floor.get("step_s"):
            out[f"{prefix}_over_floor"] = skinr1["step_s"] / floor["step_s"]
            out[f"floor_share_of_{prefix}"] = floor["step_s"] / skinr1["step_s"]
    return out


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(size: str, summaries: Sequence[dict[str, Any]]) -> str:
    """A markdown table of one size's systems (a crashed one shows its error instead of figures)."""
    header = ("| system | s/step | generated samples/s | trained samples/s | tokens/s | gen s | scoring s | reward s "
              "| train s | sync s | wait s | peak RSS GiB |")
    lines = [f"### {size}", "", header, "|" + "---|" * (header.count("|") - 1)]
    for s in summaries:
        status = "" if s["status"] == "ok" else f" ({s['status']} at step {s.get('crashed_at_step')})"
        scoring = "in train" if s["system"] in SKINR1_SYSTEMS else _cell(s.get("scoring_s"))
        lines.append(
            f"| {s['system']}{status} | {_cell(s.get('step_s'))} | {_cell(s.get('generated_per_s'), 1)} "
            f"| {_cell(s.get('trained_per_s'), 1)} | {_cell(s.get('tokens_per_s'), 0)} | {_cell(s.get('generate_s'))} "
            f"| {scoring} | {_cell(s.get('reward_s'), 3)} | {_cell(s.get('train_s'))} | {_cell(s.get('sync_s'))} "
            f"| {_cell(s.get('wait_s'))} | {_cell(s.get('peak_rss_gib'))} |")
    errors = [f"- {s['system']}: {s['status']}: {s.get('error')}" for s in summaries if s["status"] != "ok"]
    r = ratios(summaries)
    lines.append("")
    for prefix, label, caveat in SKINR1_SYSTEMS.values():
        if f"{prefix}_over_best_trl" in r:
            over = r[f"{prefix}_over_best_trl"]
            lines.append(f"{label} / best TRL mode ({r['best_trl']}): {over:.2f}x step time ({1 / over:.2f}x its speed{caveat})")
        elif prefix == "skinr1":
            lines.append("SkinR1 / best TRL mode: n/a (no TRL mode or SkinR1 finished)")
    for prefix, label, _ in SKINR1_SYSTEMS.values():
        if f"{prefix}_over_floor" in r:
            lines.append(f"{label} / raw-engine floor: {r[f'{prefix}_over_floor']:.2f}x step time "
                         f"(the floor's step is {100 * r[f'floor_share_of_{prefix}']:.0f}% of {label}'s)")
    return "\n".join(lines + ([""] + errors if errors else []))
