"""One-screen summaries of finished stages, as pure functions of their metrics rows."""

from __future__ import annotations

import statistics
from typing import Sequence


def _mean(rows: Sequence[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return statistics.fmean(values) if values else None


def _ends(rows: Sequence[dict], key: str, window: int = 10) -> str:
    """"first -> last" of `key`, each the mean of `window` rows (the start and the end of a run)."""
    first, last = _mean(rows[:window], key), _mean(rows[-window:], key)
    return "n/a" if first is None else f"{first:.3f} -> {last:.3f}"


def sft_summary(rows: Sequence[dict]) -> str:
    if not rows:
        return "sft: no steps recorded"
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    return (f"sft: {rows[-1]['step']} steps, loss {_ends(rows, 'loss')} (means of the first/last 10 steps)"
            + (f", {len(rows) / seconds:.1f} steps/s" if seconds else ""))


def grpo_summary(rows: Sequence[dict]) -> str:
    """Reward, probes, validation, health and time of a GRPO run, in a few lines."""
    if not rows:
        return "grpo: no steps recorded"
    last = rows[-1]
    lines = [f"grpo: {last['step']} steps, {last.get('policy_version', '?')} updates, "
             f"{last.get('skipped_steps', 0)} steps skipped (every group had equal rewards)",
             f"  training reward {_ends(rows, 'reward_mean')} (means of the first/last 10 steps; max 2.0)"]
    probes = [(r["probe_policy_version"], r["probe_reward_mean"]) for r in rows if "probe_reward_mean" in r]
    if probes:
        lines.append("  probe reward (fixed images and seed) by policy version: "
                     + ", ".join(f"v{v} {x:.3f}" for v, x in probes))
    validation = [r for r in rows if "val_leaf_accuracy" in r]
    if validation:
        lines.append("  validation leaf accuracy (greedy, held out) by policy version: " + ", ".join(
            f"v{r['val_policy_version']} {r['val_leaf_accuracy']:.3f} [{r['val_leaf_ci'][0]:.2f}, {r['val_leaf_ci'][1]:.2f}]"
            for r in validation))
    health = [f"KL {_mean(rows[-10:], 'kl'):.4f}" if _mean(rows, "kl") is not None else "",
              f"entropy {_mean(rows[-10:], 'entropy'):.3f}" if _mean(rows, "entropy") is not None else "",
              f"truncated {_mean(rows, 'truncation_rate'):.1%}" if _mean(rows, "truncation_rate") is not None else "",
              f"reward errors {_mean(rows, 'reward_error_rate'):.1%}" if _mean(rows, "reward_error_rate") is not None else ""]
    lines.append("  " + ", ".join(h for h in health if h) + " (last 10 steps / whole run)")
    times = {key: _mean(rows, f"{key}_s") for key in ("step", "generate", "learn", "sync")}
    if times["step"] is not None:
        lines.append("  per step: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items() if v is not None))
    return "\n".join(lines)

