"""`skinr1 ablate`: GRPO variants of one run on the same data and SFT warm start, in one report.

A variants file names each variant and the `key=value` overrides that make it:

    variants:
      hierarchical: []                          # the run's own GRPO stage
      binary: [reward.partial_credit=false]     # all-or-nothing accuracy reward
      no_sft: [rl.init_from_sft=false]          # RL from the base model

A variant without overrides is the run's own GRPO stage (<run_dir>/rl, reused when finished);
the others train under <run_dir>/ablations/<name>/rl. The base model, data, trajectories and SFT
are shared. One evaluation then compares the SFT policy and every variant on the held-out sets,
with the paired bootstrap interval of each variant's difference from SFT and from the first variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_variants(path: str | Path) -> dict[str, list[str]]:
    """{name: overrides} from a variants file; a clear ValueError for anything else."""
    data = yaml.safe_load(Path(path).read_text())
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"{path}: expected a mapping 'variants: {{name: [key=value, ...]}}' with at least one variant")
    parsed: dict[str, list[str]] = {}
    for name, overrides in variants.items():
        if overrides is None:
            overrides = []
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ValueError(f"{path}: variant {name!r} must list key=value overrides, got {overrides!r}")
        parsed[str(name)] = overrides
    return parsed


def comparison_pairs(names: list[str], reference: str = "sft") -> list[tuple[str, str]]:
    """Each variant against the reference checkpoint, then each later variant against the first."""
    return [(reference, name) for name in names] + [(names[0], name) for name in names[1:]]


def run_ablation(config_path: str | None, overrides: list[str], variants: dict[str, list[str]],
                 fresh: bool = False) -> dict[str, Any]:
    """Train every variant (reusing finished stages) and write <run_dir>/ablations/eval/report.*."""
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline import stages

    checkpoints: dict[str, str] = {}
    config = None
    for name, extra in variants.items():
        variant_overrides = [*overrides, *extra, *([f"variant={name}"] if extra else [])]
        config = load_run_config(config_path, variant_overrides)
        print(f"[ablate] variant {name}: {' '.join(extra) or '(the run itself)'} -> {config.rl_dir}")
        base = stages.base_model_stage(config)
        data_dir = stages.data_stage(config)
        sft = stages.sft_stage(config, base, stages.trajectories_stage(config, data_dir))
        if not checkpoints:
            checkpoints["sft"] = str(sft)
        checkpoints[name] = str(stages.rl_stage(config, base, sft, data_dir, fresh))
    reference = load_run_config(config_path, overrides)
    directory = reference.run_path / "ablations" / "eval"
    return stages.eval_stage(reference, checkpoints, stages.data_stage(reference), fresh, directory=directory,
                             pairs=comparison_pairs(list(variants)))
