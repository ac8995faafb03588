"""One source of model settings: `skinr1.config.derive` carries model.* to every stage (pure, fast)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from learner.optim import precision_config
from rollout.engine import EngineSettings, engine_kwargs, on_cpu
from skinr1.config import derive
from skinr1.config.loader import ConfigError, removed_key_errors
from skinr1.config.schema import ModelConfig, load_run_config
from skinr1.models.settings import PolicySettings

CONFIGS = Path(__file__).resolve().parents[1] / "skinr1" / "configs"


def _stage_views(config) -> dict[str, object]:
    """What each stage reads its model settings from (PolicySettings or EngineSettings)."""
    from skinr1.serving.policy import ServedPolicy
    from skinr1.serving.service import serving_engine_settings

    rl = derive.rl_settings(config)
    # Serving a checkpoint of this run: its skinr1_policy.json records the run's settings.
    served = ServedPolicy("p", "base", None, metadata={"model_settings": derive.policy_settings(config).to_dict()})
    return {
        "sft": derive.sft_settings(config).policy,
        "learner": rl.policy,
        "rollout": rl.engine,
        "eval": derive.eval_settings(config).engine,
        "serve": serving_engine_settings(served, EngineSettings()),
    }


def test_paper_settings_reach_every_stage():
    config = load_run_config(CONFIGS / "paper.yaml")
    assert config.model.max_pixels == 200704 and config.model.dtype == "bfloat16"
    for stage, view in _stage_views(config).items():
        assert (view.dtype, view.min_pixels, view.max_pixels) == ("bfloat16", None, 200704), stage
    # vLLM's processor gets the bound (mm_processor_kwargs), not only our own resize.
    kwargs = engine_kwargs("m", derive.rl_settings(config).engine)
    assert kwargs["mm_processor_kwargs"] == {"max_pixels": 200704} and kwargs["dtype"] == "bfloat16"
    assert derive.eval_settings(config).engine.max_model_len == config.rl.rollout.max_model_len


def test_every_model_field_reaches_every_stage():
    """A model.* setting that a stage does not receive is a bug: change each one and look."""
    changed = {"dtype": "float16", "min_pixels": 4 * 784, "max_pixels": 64 * 784, "trust_remote_code": True}
    # name_or_path says which weights; perception_pretraining builds the tiny base model (the base
    # model stage): neither is a runtime setting of a stage.
    assert set(changed) | {"name_or_path", "perception_pretraining"} == {f.name for f in dataclasses.fields(ModelConfig)}
    config = load_run_config(CONFIGS / "demo.yaml", [f"model.{k}={v}" for k, v in changed.items()])
    for stage, view in _stage_views(config).items():
        for name, value in changed.items():
            if stage == "serve" and name == "trust_remote_code":
                # On purpose: a checkpoint's own metadata must not grant it code execution on the
                # serving machine; only the serve config can (ServeConfig.engine.trust_remote_code).
                assert view.trust_remote_code is False
                continue
            assert getattr(view, name) == value, (stage, name)


def test_demo_keeps_its_cpu_behaviour():
    """float32 and the checkpoint's own pixel bounds: the demo's published numbers depend on it."""
    config = load_run_config(CONFIGS / "demo.yaml")
    for stage, view in _stage_views(config).items():
        assert (view.dtype, view.min_pixels, view.max_pixels) == ("float32", None, None), stage
    assert "mm_processor_kwargs" not in engine_kwargs("m", derive.rl_settings(config).engine)
    assert engine_kwargs("m", derive.rl_settings(config).engine)["dtype"] == "float32"
    rl = derive.rl_settings(config)
    assert rl.engine.enable_lora is False and rl.engine.worker_extension_cls  # demo: lora_sync=merged_on_rollout
    assert rl.rl.merges_on_rollout  # the actors merge the adapter (README, Benchmarks)
    assert rl.engine.max_model_len == 1024 and rl.engine.seed == config.seed


@pytest.mark.parametrize("key", ["sft.max_pixels", "sft.min_pixels"])
def test_old_sft_pixel_settings_fail_with_a_pointer_to_model(tmp_path, key):
    with pytest.raises(ConfigError, match=rf"{key} is no longer a setting: set model\.{key.split('.')[1]}"):
        load_run_config(CONFIGS / "demo.yaml", [f"{key}=200704"])
    old = tmp_path / "old.yaml"
    old.write_text((CONFIGS / "paper.yaml").read_text().replace("  max_length: 1024", f"  max_length: 1024\n  {key.split('.')[1]}: 200704"))
    with pytest.raises(ConfigError, match=rf"{key} is no longer a setting"):
        load_run_config(old)


def test_removed_key_errors_walk_nested_keys():
    removed = {"a.b": "use c"}
    assert removed_key_errors({"a": {"b": 1, "x": 2}}, removed) == ["a.b is no longer a setting: use c"]
    assert removed_key_errors({"b": 1, "a": 3}, removed) == []


@pytest.mark.parametrize(
    "bf16, dtype, expected",
    [("auto", "float32", (False, False)), ("auto", "bfloat16", (True, False)), ("true", "bfloat16", (True, False)),
     ("true", "float32", (True, False)), ("auto", "float16", (False, True)), ("false", "float32", (False, False))],
)
def test_precision_follows_the_model_dtype(bf16, dtype, expected):
    sections = precision_config(bf16, dtype)
    assert (sections["bf16"]["enabled"], sections["fp16"]["enabled"]) == expected


def test_contradicting_precision_fails_before_any_work():
    with pytest.raises(ValueError, match="contradicts model.dtype=bfloat16"):
        precision_config("false", "bfloat16")
    config = load_run_config(CONFIGS / "demo.yaml", ["model.dtype=bfloat16", "sft.deepspeed.bf16='false'"])
    with pytest.raises(ValueError, match="contradicts"):
        derive.sft_settings(config)


def test_recorded_settings_fill_only_what_the_serving_config_leaves_open():
    metadata = {"model_settings": PolicySettings("bfloat16", None, 200704).to_dict()}
    filled = derive.recorded_engine_settings(EngineSettings(), metadata)
    assert (filled.dtype, filled.max_pixels) == ("bfloat16", 200704)
    explicit = derive.recorded_engine_settings(EngineSettings(dtype="float32", max_pixels=50176), metadata)
    assert (explicit.dtype, explicit.max_pixels) == ("float32", 50176)
    assert derive.recorded_engine_settings(EngineSettings(), {}) == EngineSettings()


def test_policy_settings_validate_their_bounds():
    with pytest.raises(ValueError, match="exceeds"):
        PolicySettings(min_pixels=100 * 784, max_pixels=10 * 784)
    with pytest.raises(ValueError, match="784"):
        PolicySettings(max_pixels=100)
    assert PolicySettings.from_dict(PolicySettings("bfloat16", 784, 1568).to_dict()) == PolicySettings("bfloat16", 784, 1568)


def test_the_demo_compiles_its_engines_where_a_cpu_compiler_exists(monkeypatch, caplog):
    """rl.rollout.enforce_eager=false reaches the rollout and evaluation engines; on CPU without a
    C++ compiler for torch.compile the engine runs eagerly and the log says why, once."""
    config = load_run_config(CONFIGS / "demo.yaml")
    engines = {"rollout": derive.rl_settings(config).engine, "eval": derive.eval_settings(config).engine}
    assert {stage: engine.enforce_eager for stage, engine in engines.items()} == {"rollout": False, "eval": False}
    monkeypatch.setenv("CXX", "g++")
    if shutil.which("g++") is not None:
        assert engine_kwargs("m", engines["rollout"])["enforce_eager"] is False
    monkeypatch.setenv("CXX", "no-such-compiler-skinr1")
    with caplog.at_level("WARNING", logger="rollout.engine"):
        kwargs = engine_kwargs("m", engines["rollout"])
    assert kwargs["enforce_eager"] is (True if on_cpu() else False)
    if on_cpu():
        assert "no C++ compiler 'no-such-compiler-skinr1' on PATH" in caplog.text
        caplog.clear()  # the next engine start runs eagerly too, without saying it again
        with caplog.at_level("WARNING", logger="rollout.engine"):
            assert engine_kwargs("m", engines["rollout"])["enforce_eager"] is True
        assert "no C++ compiler" not in caplog.text
    # An eager engine stays eager, compiler or not.
    assert engine_kwargs("m", dataclasses.replace(engines["rollout"], enforce_eager=True))["enforce_eager"] is True
