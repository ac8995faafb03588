"""The small GRPO run the integration tests share: the demo config cut down to seconds per stage.

`prepare_run` builds (or reuses) the base model, data, trajectories and SFT of a run directory and
returns what the RL stage starts from; the RL stage itself is left to each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

CONFIG = str(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml")
OVERRIDES = [
    "data.synthetic_scale=0.1",
    "model.perception_pretraining.images=32",  # the code path, not the demo's 3,072 captions
    "model.perception_pretraining.epochs=1",
    "sft.max_steps=4",
    "sft.checkpoint_every=4",
    "rl.steps=3",
    "rl.checkpoint_every=1",
    "rl.prompts_per_step=4",
    "rl.sampling.group_size=2",
    "rl.sampling.max_tokens=48",
    "rl.learner.micro_batch_size=2",
    "rl.rollout.max_model_len=512",
    "rl.loss.filter_constant_groups=false",  # fixed prompts per step: the data order is checkable
]


def prepare_run(run_dir: Path, overrides: Sequence[str] = ()) -> tuple[Any, Path, Any]:
    """(config, data directory, RL starting point) of `run_dir` with OVERRIDES and `overrides`;
    stages already finished there are reused."""
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline import stages

    config = load_run_config(CONFIG, [f"run_dir={run_dir}", *OVERRIDES, *overrides])
    base = stages.base_model_stage(config)
    data = stages.data_stage(config)
    sft = stages.sft_stage(config, base, stages.trajectories_stage(config, data))
    return config, data, stages.rl_policy_start(config, base, sft)
