"""A servable checkpoint without training: the tiny model plus a fresh LoRA adapter, laid out like an
RL `final/` directory. Used by the serving tests, the serving benchmark and the docs' quick start;
it exercises exactly the adapter path a trained checkpoint takes (LoRA on the language model and the
vision merger, `skinr1_policy.json`), with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_demo_checkpoint(out_dir: str | Path, rl_steps: int = 3, rank: int = 8, base: str | Path | None = None) -> Path:
    """Write `<out_dir>/base` (tiny model, unless `base` is given) and `<out_dir>/rl/final` (adapter)."""
    from learner.lora import LoraSettings, apply_lora
    from learner.sft import POLICY_META
    from skinr1.models.loading import load_policy
    from skinr1.models.tiny import build_tiny_model

    out = Path(out_dir)
    base_dir = Path(base) if base is not None else build_tiny_model(out / "base")
    final = out / "rl" / "final"
    model = apply_lora(load_policy(base_dir), LoraSettings(rank=rank, alpha=2 * rank, dropout=0.0))
    model.save_pretrained(final)
    (final / POLICY_META).write_text(json.dumps({"rl_steps": rl_steps, "base_model": str(base_dir)}, indent=2))
    return final
