"""Rollout engines' process settings, CPU thread pinning and where the engine core runs: settings
that reach each engine's process (pure, fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from learner.grpo_config import RolloutConfig
from rollout.engine import MULTIPROCESSING_ENV, EngineSettings, engine_core_in_process, on_cpu, prepare_engine_process
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
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE", MULTIPROCESSING_ENV):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    prepare_engine_process(EngineSettings(cpu_threads_bind="nobind"))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    prepare_engine_process(EngineSettings(cpu_threads_bind="nobind"))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_rollout_engine_cores_run_in_their_actor_on_cpu_by_default():
    config = load_run_config(CONFIGS / "demo.yaml")
    assert config.rl.rollout.engine_core == "auto"
    assert derive.rl_settings(config).engine.engine_core_in_process is on_cpu()
    assert EngineSettings().engine_core_in_process is False  # evaluation runs its engine beside the driver's work
    config = load_run_config(CONFIGS / "demo.yaml", ["rl.rollout.engine_core=subprocess"])
    assert derive.rl_settings(config).engine.engine_core_in_process is False


@pytest.mark.parametrize("place, in_process", [("in_process", True), ("subprocess", False), ("auto", on_cpu())])
def test_engine_core_places(place, in_process):
    assert engine_core_in_process(place) is in_process
    assert RolloutConfig(engine_core=place).engine_core == place


@pytest.mark.parametrize("value", ["", "inprocess", "thread", None])
def test_bad_engine_core_place_is_refused_naming_the_key(value):
    with pytest.raises(SettingError, match=r"rl\.rollout\.engine_core"):
        RolloutConfig(engine_core=value)
    with pytest.raises(SettingError, match="engine_core"):
        engine_core_in_process(value)


@pytest.mark.parametrize("leftover", [None, "0", "1"])
def test_the_setting_decides_where_the_engine_core_runs_whatever_the_environment_says(monkeypatch, leftover):
    """Set both ways: a value the environment Ray started the actor with carries never decides in
    the setting's place."""
    for in_process, expected in ((True, "0"), (False, "1")):
        monkeypatch.setenv(MULTIPROCESSING_ENV, "")
        monkeypatch.delenv(MULTIPROCESSING_ENV)
        if leftover is not None:
            monkeypatch.setenv(MULTIPROCESSING_ENV, leftover)
        prepare_engine_process(EngineSettings(engine_core_in_process=in_process))
        assert os.environ[MULTIPROCESSING_ENV] == expected
