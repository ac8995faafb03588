"""Typed configs from YAML with key=value overrides; bad values give errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from skinr1.config.loader import ConfigError, field_docs, load_config, to_yaml


@dataclass
class _Inner:
    lr: float = 1e-5
    """Learning rate."""
    steps: int = 10
    """Optimizer steps."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"inner.steps must be >= 1, got {self.steps}")


@dataclass
class _Outer:
    name: str = "demo"
    """Run name."""
    inner: _Inner = field(default_factory=_Inner)
    """Nested section."""


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: paper\ninner:\n  lr: 3.0e-5\n")
    config = load_config(_Outer, path, ["inner.steps=7"])
    assert isinstance(config.inner, _Inner)
    assert (config.name, config.inner.lr, config.inner.steps) == ("paper", 3e-5, 7)
    assert "steps: 7" in to_yaml(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inner.stepz=3"], "stepz"),
        (["inner.steps=abc"], "steps"),
        (["inner.steps=0"], "inner.steps must be >= 1"),
        (["name"], "key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_Outer, None, overrides)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Outer, tmp_path / "none.yaml")


def test_field_docs_are_read_from_source():
    assert field_docs(_Inner) == {"lr": "Learning rate.", "steps": "Optimizer steps."}


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_shipped_run_configs_load(name):
    from pathlib import Path

    from skinr1.config.schema import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / name)
    assert config.rl.mode == config.reward.mode
    assert config.rl.grad_accum_steps >= 1


def test_run_config_cross_checks():
    from skinr1.config.schema import load_run_config

    with pytest.raises(ConfigError, match="must agree"):
        load_run_config(None, ["rl.mode=choice", "reward.mode=open"])
    with pytest.raises(ConfigError, match="divide evenly"):
        load_run_config(None, ["rl.prompts_per_step=3", "rl.sampling.group_size=1"])
    with pytest.raises(ConfigError, match="temperature"):
        load_run_config(None, ["rl.sampling.temperature=0"])


def test_default_run_config_is_consistent():
    from skinr1.config.schema import SkinR1Config

    config = SkinR1Config()
    assert config.rl.mode == config.reward.mode == "choice"


def test_cli_accepts_overrides_around_flags():
    from skinr1.cli import build_parser, main, parse_arguments

    args = parse_arguments(build_parser(), ["rl", "--config", "x.yaml", "run_dir=/tmp/a", "--fresh", "rl.steps=2"])
    assert args.overrides == ["run_dir=/tmp/a", "rl.steps=2"] and args.fresh
    with pytest.raises(SystemExit):
        main(["taxonomy", "show", "--bogus"])
    with pytest.raises(SystemExit):
        main(["rl", "--config", "x.yaml", "--bogus"])


def test_what_rollout_engines_receive_follows_lora_and_lora_sync():
    from skinr1.config.schema import load_run_config

    assert not load_run_config(None, []).rl.syncs_full_weights  # adapters
    assert load_run_config(None, ["rl.lora_sync=merged"]).rl.syncs_full_weights
    on_rollout = load_run_config(None, ["rl.lora_sync=merged_on_rollout"]).rl
    assert on_rollout.syncs_full_weights and on_rollout.merges_on_rollout
    assert not load_run_config(None, ["rl.lora_sync=merged"]).rl.merges_on_rollout
    assert not load_run_config(None, ["rl.lora_sync=merged_on_rollout", "rl.learner.lora.enabled=false"]).rl.merges_on_rollout
    assert load_run_config(None, ["rl.learner.lora.enabled=false"]).rl.syncs_full_weights
    with pytest.raises(ConfigError, match="merged"):
        load_run_config(None, ["rl.lora_sync=fused"])
    with pytest.raises(ConfigError, match="sync_bucket_mb"):
        load_run_config(None, ["rl.sync_bucket_mb=0"])


def test_sync_backends_are_checked_by_name():
    from skinr1.config.schema import load_run_config

    assert load_run_config(None, ["rl.sync_backend=shared_memory"]).rl.sync_backend == "shared_memory"
    with pytest.raises(ConfigError, match="object_store"):
        load_run_config(None, ["rl.sync_backend=nccl"])


def test_reward_probe_settings_are_checked():
    from skinr1.config.schema import load_run_config

    with pytest.raises(ConfigError, match="probe"):
        load_run_config(None, ["rl.probe_every=-1"])
    with pytest.raises(ConfigError, match="probe"):
        load_run_config(None, ["rl.probe_prompts=0"])


@pytest.mark.parametrize("uri", ["ftp://host/skinr1/runs", "hdfs://namenode/skinr1/runs"])
def test_run_dir_uri_of_an_unsupported_scheme_is_refused_with_the_reason(uri):
    from skinr1.config.loader import ConfigError
    from skinr1.config.schema import load_run_config

    with pytest.raises(ConfigError, match=r"run_dir .*not supported; use a local or shared path, or one of s3://"):
        load_run_config(None, [f"run_dir={uri}"])
