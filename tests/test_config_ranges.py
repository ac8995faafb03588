"""Every RL, rollout, reward and Ray setting is range-checked where it is declared, and a bad value
fails at load time with its full key, before the CLI creates the run directory or starts Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skinr1.config.checks import SettingError
from skinr1.config.loader import ConfigError, qualified_message
from skinr1.config.schema import load_run_config

ROOT = Path(__file__).resolve().parents[1]

# override -> the start of the message it must produce (each was accepted before the checks).
BAD_VALUES = [
    ("rl.checkpoint_every=0", "rl.checkpoint_every must be >= 1, got 0"),
    ("rl.keep_checkpoints=0", "rl.keep_checkpoints must be >= 1"),
    ("rl.keep_checkpoints=-1", "rl.keep_checkpoints must be >= 1"),
    ("rl.num_reward_actors=0", "rl.num_reward_actors must be >= 1"),
    ("rl.mode=essay", "rl.mode must be one of"),
    ("rl.stop_after_step=0", "rl.stop_after_step must be >= 1"),
    ("rl.kill_rollout_actor_at_step=-1", "rl.kill_rollout_actor_at_step must be >= 1"),
    ("rl.max_reward_error_rate=nan", "rl.max_reward_error_rate must be a finite number"),
    ("rl.sync_bucket_mb=inf", "rl.sync_bucket_mb must be a finite number"),
    ("rl.learner.learning_rate=nan", "rl.learner.learning_rate must be a finite number"),
    ("rl.learner.learning_rate=inf", "rl.learner.learning_rate must be a finite number"),
    ("rl.learner.warmup_ratio=5", "rl.learner.warmup_ratio must be in [0, 1)"),
    ("rl.learner.weight_decay=-0.1", "rl.learner.weight_decay must be >= 0"),
    ("rl.learner.cpus_per_rank=-1", "rl.learner.cpus_per_rank must be >= 0"),
    ("rl.learner.score_micro_batch_size=0", "rl.learner.score_micro_batch_size must be >= 1"),
    ("rl.learner.score_micro_batch_size=6", "rl.learner.score_micro_batch_size must be a multiple of rl.learner.micro_batch_size (4)"),
    ("rl.learner.custom_resources.learner_node=-1", "rl.learner.custom_resources.learner_node must be >= 0"),
    ("rl.learner.deepspeed.gradient_clipping=nan", "rl.learner.deepspeed.gradient_clipping must be a finite number"),
    ("rl.learner.deepspeed.zero_stage=4", "rl.learner.deepspeed.zero_stage must be one of"),
    ("rl.learner.lora.rank=0", "rl.learner.lora.rank must be >= 1"),
    ("rl.learner.lora.dropout=nan", "rl.learner.lora.dropout must be a finite number"),
    ("rl.loss.clip_low=1.5", "rl.loss.clip_low must be in [0, 1)"),
    ("rl.loss.kl_beta=nan", "rl.loss.kl_beta must be a finite number"),
    ("rl.loss.tis_cap=-1", "rl.loss.tis_cap must be >= 0"),
    ("rl.loss.std_floor=inf", "rl.loss.std_floor must be a finite number"),
    ("rl.loss.max_refill_rounds=-1", "rl.loss.max_refill_rounds must be >= 0"),
    ("rl.sampling.group_size=0", "rl.sampling.group_size must be >= 1"),
    ("rl.sampling.temperature=nan", "rl.sampling.temperature must be a finite number"),
    ("rl.sampling.max_tokens=0", "rl.sampling.max_tokens must be >= 1"),
    ("rl.rollout.gpu_memory_utilization=7", "rl.rollout.gpu_memory_utilization must be in (0, 1]"),
    ("rl.rollout.tensor_parallel_size=0", "rl.rollout.tensor_parallel_size must be >= 1"),
    ("rl.rollout.max_model_len=0", "rl.rollout.max_model_len must be >= 64"),
    ("rl.rollout.placement_timeout_s=nan", "rl.rollout.placement_timeout_s must be a finite number"),
    ("rl.rollout.startup_timeout_s=inf", "rl.rollout.startup_timeout_s must be a finite number"),
    ("rl.rollout.resources.num_cpus=-1", "rl.rollout.resources.num_cpus must be >= 0"),
    ("rl.rollout.resources.num_gpus=nan", "rl.rollout.resources.num_gpus must be a finite number"),
    ("rl.rollout.resources.custom.rollout_node=-1", "rl.rollout.resources.custom.rollout_node must be >= 0"),
    ("sft.learning_rate=nan", "sft.learning_rate must be a finite number"),
    ("sft.min_lr_ratio=2", "sft.min_lr_ratio must be in [0, 1]"),
    ("sft.weight_decay=-1", "sft.weight_decay must be >= 0"),
    ("sft.cpus_per_worker=-1", "sft.cpus_per_worker must be >= 0"),
    ("sft.stop_after_step=0", "sft.stop_after_step must be >= 1"),
    ("sft.deepspeed.gradient_clipping=-1", "sft.deepspeed.gradient_clipping must be >= 0"),
    ("sft.lora.alpha=0", "sft.lora.alpha must be >= 1"),
    ("reward.format_weight=nan", "reward.format_weight must be a finite number >= 0"),
    ("reward.malignancy_classes=5", "reward.malignancy_classes must be 3 or 4"),
    ("ray.num_cpus=-2", "ray.num_cpus must be >= 1, got -2"),
    ("ray.num_cpus=0", "ray.num_cpus must be >= 1"),
    ("ray.address=''", "ray.address must be a cluster address or unset"),
    ("data.synthetic_scale=inf", "data.synthetic_scale must be a finite number"),
    ("seed=-1", "seed must be >= 0"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_fails_at_load_naming_its_full_key(override, message):
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, [override])
    assert str(caught.value).startswith(message), str(caught.value)


def test_shipped_defaults_pass_the_checks():
    for name in ("demo.yaml", "paper.yaml"):
        load_run_config(ROOT / "skinr1" / "configs" / name)


def test_reused_section_errors_get_the_section_path():
    assert qualified_message(SettingError("zero_stage", "must be one of (0, 1, 2, 3), got 5"), "sft.deepspeed") == \
        "sft.deepspeed.zero_stage must be one of (0, 1, 2, 3), got 5"
    # A section that names its own full key keeps it.
    assert qualified_message(SettingError("rl.rollout.num_workers", "must be ..."), "rl.rollout") == \
        "rl.rollout.num_workers must be ..."
    assert qualified_message(ValueError("no such tag"), "trajectories") == "trajectories: no such tag"


def test_direct_construction_is_checked_too():
    from learner.grpo_config import GRPOConfig
    from learner.sft_config import SFTConfig

    with pytest.raises(SettingError, match=r"rl.checkpoint_every must be >= 1, got 0"):
        GRPOConfig(checkpoint_every=0)
    with pytest.raises(SettingError, match="sft.learning_rate must be a finite number"):
        SFTConfig(learning_rate=float("nan"))


def test_cli_refuses_a_bad_value_before_creating_the_run_or_starting_ray(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "skinr1", "rl", "--config", str(ROOT / "skinr1" / "configs" / "demo.yaml"),
         f"run_dir={run_dir}", "rl.checkpoint_every=0"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "rl.checkpoint_every must be >= 1, got 0" in result.stderr
    # load_config_from_args creates the run directory and its logs/ right before ray.init.
    assert not run_dir.exists()
    assert "framework logs" not in result.stdout
