"""Serving settings (validation, loading, tokens and exposure, deployment options and CLI flags) and
the checkpoints a server accepts or refuses; no server is started."""

from __future__ import annotations

import json

import pytest

from skinr1.serving.config import ServeConfig, check_exposure, is_loopback, resolve_token


# --------------------------------------------------------------------------- config
def test_config_validation_and_loading():
    from skinr1.config.loader import ConfigError, load_config

    config = load_config(ServeConfig, None, ["port=9001", "max_replicas=3", "engine.max_model_len=1024"])
    assert config.port == 9001 and config.autoscaling and config.engine.max_model_len == 1024
    assert config.engine.trust_remote_code is False and config.host == "127.0.0.1"
    assert config.max_body_bytes > config.max_image_bytes * 4 / 3
    for bad in (["mode=guess"], ["port=0"], ["replicas=0"], ["min_replicas=4", "max_replicas=2"], ["unknown=1"]):
        with pytest.raises(ConfigError):
            load_config(ServeConfig, None, bad)


@pytest.mark.parametrize("key, value", [
    ("host", " "), ("port", 0), ("port", 65536), ("app_name", ""), ("replicas", 0), ("min_replicas", -1),
    ("max_replicas", -1), ("target_ongoing_requests", 0.0), ("max_ongoing_requests", 0),
    ("cpus_per_replica", -1.0), ("gpus_per_replica", -0.5), ("request_timeout_s", 0.0),
    ("request_timeout_s", float("inf")), ("body_timeout_s", 0.0), ("body_timeout_s", 1e9),
    ("keep_alive_timeout_s", 0), ("max_image_bytes", 0), ("max_image_pixels", 0), ("max_text_bytes", 10),
    ("max_drain_bytes", -1), ("ssl_certfile", "/no/such/cert.pem"), ("ssl_keyfile", "/no/such/key.pem"),
    ("token_env", ""), ("mode", "guess"), ("max_tokens", 0), ("temperature", -0.1), ("max_choices", 0),
    ("decode_concurrency", -1), ("decode_concurrency", 1.5), ("decode_nice", -1), ("decode_nice", 20),
])
def test_every_serving_setting_is_validated_by_name(key, value):
    with pytest.raises(ValueError, match=f"^{key} |; {key} |{key} must"):
        ServeConfig(**{key: value})


def test_a_served_engine_refuses_an_in_process_engine_core():
    from skinr1.config.loader import ConfigError, load_config

    with pytest.raises(ConfigError, match="engine.engine_core_in_process must be false"):
        load_config(ServeConfig, None, ["engine.engine_core_in_process=true"])
    assert load_config(ServeConfig, None, ["engine.engine_core_in_process=false"]).engine.engine_core_in_process is False


def test_a_replica_decodes_one_large_image_per_reserved_cpu():
    assert ServeConfig().replica_decode_concurrency == 1
    assert ServeConfig(cpus_per_replica=0.5).replica_decode_concurrency == 1
    assert ServeConfig(cpus_per_replica=4.0).replica_decode_concurrency == 4
    assert ServeConfig(cpus_per_replica=4.0, decode_concurrency=2).replica_decode_concurrency == 2


def test_serving_timeouts_default_on_and_https_needs_both_files(tmp_path):
    from skinr1.serving.app import http_options

    config = ServeConfig()
    assert config.request_timeout_s > 0 and 0 < config.body_timeout_s <= config.request_timeout_s
    options = http_options(config)
    assert options["request_timeout_s"] >= config.request_timeout_s and "ssl_certfile" not in options
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(ValueError, match="ssl_keyfile"):
        ServeConfig(ssl_certfile=str(cert))
    secure = ServeConfig(ssl_certfile=str(cert), ssl_keyfile=str(key))
    assert secure.scheme == "https"
    assert http_options(secure)["ssl_certfile"] == str(cert) and http_options(secure)["ssl_keyfile"] == str(key)


def test_overrides_refuse_interpolation():
    from skinr1.config.loader import ConfigError, load_config

    for override in ("model_name=${oc.env:SKINR1_SERVE_TOKEN}", "model_name=${oc.env:HOME,x}", "model_name=${token_env}",
                     "engine.max_model_len=${oc.decode:'1'}"):
        with pytest.raises(ConfigError, match="interpolation"):
            load_config(ServeConfig, None, [override])
    assert load_config(ServeConfig, None, ["model_name=my-model"]).model_name == "my-model"


def test_token_and_exposure():
    config = ServeConfig(token_env="MY_TOKEN")
    assert resolve_token(config, {"MY_TOKEN": " abc "}) == "abc"
    assert resolve_token(config, {"MY_TOKEN": "  "}) is None and resolve_token(config, {}) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_exposure(config, None)  # loopback without a token is fine
    with pytest.raises(ValueError, match="MY_TOKEN"):
        check_exposure(ServeConfig(host="0.0.0.0", token_env="MY_TOKEN"), None)
    check_exposure(ServeConfig(host="0.0.0.0"), "token")
    check_exposure(ServeConfig(host="0.0.0.0", allow_unauthenticated=True), None)


def test_deployment_options_and_cli_flags():
    import argparse

    from skinr1.cli import build_parser, parse_arguments
    from skinr1.cli.serve_cmd import flag_overrides
    from skinr1.serving.app import SkinR1Deployment, deployment_options

    fixed = deployment_options(ServeConfig(replicas=3, cpus_per_replica=2))
    assert SkinR1Deployment.options(**fixed).num_replicas == 3  # Serve accepts the options as built
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["num_cpus"] == 2
    scaled = deployment_options(ServeConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=4))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                            "target_ongoing_requests": 4}
    SkinR1Deployment.options(**scaled)
    args = parse_arguments(build_parser(), ["serve", "--checkpoint", "x", "--replicas", "2", "--port", "9000", "max_tokens=8"])
    assert isinstance(args, argparse.Namespace) and args.overrides == ["max_tokens=8"]
    assert flag_overrides(args) == ["port=9000", "replicas=2"]


# --------------------------------------------------------------------------- checkpoints
def _fake_model(directory, weights="model.safetensors"):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / weights).write_bytes(b"")
    return directory


def _fake_adapter(directory, base, rank=8, meta=None):
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": rank}))
    (directory / "adapter_model.safetensors").write_bytes(b"")
    if meta is not None:
        (directory / "skinr1_policy.json").write_text(json.dumps(meta))
    return directory


def test_checkpoints_resolve_to_base_adapter_and_version(tmp_path):
    from skinr1.serving.policy import resolve_policy

    base = _fake_model(tmp_path / "base")
    adapter = _fake_adapter(tmp_path / "rl" / "final", base, rank=16, meta={"rl_steps": 12, "base_model": str(base)})
    policy = resolve_policy(adapter)
    assert policy.base == str(base) and policy.adapter == str(adapter.resolve())
    assert policy.policy_version == 12 and policy.adapter_rank == 16 and policy.name == "rl/final"
    sft = resolve_policy(_fake_adapter(tmp_path / "sft" / "final", base, meta={"sft_steps": 4}), name="mine")
    assert sft.policy_version == 0 and sft.name == "mine"
    merged = resolve_policy(base)
    assert merged.adapter is None and merged.base == str(base) and merged.name == "base"
    assert resolve_policy("Qwen/Qwen2.5-VL-7B-Instruct").base == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_checkpoints_that_are_refused(tmp_path):
    from skinr1.serving.policy import resolve_policy
    from skinr1.serving.service import serving_engine_settings
    from rollout.engine import EngineSettings

    with pytest.raises(FileNotFoundError):
        resolve_policy(tmp_path / "missing")
    with pytest.raises(ValueError, match="pickle"):
        resolve_policy(_fake_model(tmp_path / "pickled", weights="pytorch_model.bin"))
    base = _fake_model(tmp_path / "base")
    pickled_adapter = _fake_adapter(tmp_path / "adapter", base)
    (pickled_adapter / "adapter_model.safetensors").unlink()
    (pickled_adapter / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="pickle"):
        resolve_policy(pickled_adapter)
    wide = resolve_policy(_fake_adapter(tmp_path / "wide", base, rank=128))
    with pytest.raises(ValueError, match="max_lora_rank"):
        serving_engine_settings(wide, EngineSettings(max_lora_rank=64))
    assert serving_engine_settings(wide, EngineSettings(max_lora_rank=128)).enable_lora is True
    assert serving_engine_settings(resolve_policy(base), EngineSettings(enable_lora=True)).enable_lora is False
