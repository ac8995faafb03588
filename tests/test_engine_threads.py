"""Rollout engines' CPU thread pinning: a setting that reaches each engine's process (pure, fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from learner.grpo_config import RolloutConfig
from rollout.engine import EngineSettings, prepare_engine_process
from skinr1.config import derive
from skinr1.config.checks import SettingError
from skinr1.config.schema import load_run_config

CONFIGS = Path(__file__).resolve().parents[1] / "skinr1" / "configs"


def test_rollout_engines_are_not_all_pinned_to_one_core_by_default():
    config = load_run_config(CONFIGS / "demo.yaml")
    assert config.rl.rollout.cpu_threads_bind == "nobind"
    assert derive.rl_settings(config).engine.cpu_threads_bind == "nobind"
    assert EngineSettings().cpu_threads_bind == "auto"  # evaluation and serving keep vLLM's default


@pytest.mark.parametrize("value", ["auto", "nobind", "0-3", "0,2", "0-1|2-3"])
def test_thread_bind_values_accepted(value):
    assert RolloutConfig(cpu_threads_bind=value).cpu_threads_bind == value
    assert EngineSettings(cpu_threads_bind=value).cpu_threads_bind == value


@pytest.mark.parametrize("value", ["", "all", "0-", "1;2", 3])
def test_bad_thread_bind_is_refused_naming_the_key(value):
    with pytest.raises(SettingError, match=r"rl\.rollout\.cpu_threads_bind"):
        RolloutConfig(cpu_threads_bind=value)
    with pytest.raises(SettingError, match="cpu_threads_bind"):
        EngineSettings(cpu_threads_bind=value)


def test_the_engine_process_gets_the_setting_unless_its_environment_says_otherwise(monkeypatch):
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE"):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    prepare_engine_process(EngineSettings(cpu_threads_bind="nobind"))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    prepare_engine_process(EngineSettings(cpu_threads_bind="nobind"))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
