"""The one place that starts or joins Ray.

Local clusters must never listen beyond loopback: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes every
Ray process (GCS, raylet, workers, dashboard agent) bind to 127.0.0.1. Under `ray job submit`
the entrypoint already has `RAY_ADDRESS` set and we join that cluster instead of starting one.

A local node also runs with Ray's token authentication: Ray (>= 2.59) turns it on for a new local
`ray.init` unless RAY_AUTH_MODE says otherwise, and generates ~/.ray/auth_token if there is none, so
another local user cannot submit work to it through its loopback ports. It is left to Ray on
purpose: setting RAY_AUTH_MODE here, after Ray has read its config in this process, would start the
node in token mode while this driver still talks to it without a token. Joining a cluster takes the
cluster's mode from the environment its launcher set (clusters/: token everywhere).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# vLLM's engine picks the machine's address for its internal message queues unless told otherwise.
LOCAL_NODE_ENV = {**LOOPBACK_ENV, "VLLM_HOST_IP": LOOPBACK}


def loopback_environment() -> dict[str, str]:
    """Environment variables that keep a local Ray node (and its children) on 127.0.0.1."""
    return dict(LOOPBACK_ENV)


def apply_loopback_environment() -> None:
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    resources: dict[str, float] | None = None,
    runtime_env: dict[str, Any] | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
    log_dir: str | Path | None = None,
    log_run: str | None = None,
) -> dict[str, Any]:
    """Start a local loopback Ray node, or join `address` / `$RAY_ADDRESS` when given.

    With `log_dir`, the run's worker processes write their output there and only their warnings
    reach the driver's screen (see skinr1.logs); `log_run`, a run_dir in a bucket, sends them to each
    node's own mirror of that run instead. Returns the `ray.init` context info as a dict.
    Calling it again in a process that already has Ray initialised is a no-op.
    """
    apply_loopback_environment()
    import ray

    if ray.is_initialized():
        return {"address": ray.get_runtime_context().gcs_address, "reused": True}
    address = address or os.environ.get("RAY_ADDRESS") or None
    env_vars = dict(LOOPBACK_ENV if address else LOCAL_NODE_ENV)
    if not address:
        os.environ.setdefault("VLLM_HOST_IP", LOOPBACK)
    runtime_env = dict(runtime_env or {})
    if log_dir is not None:
        from skinr1.logs import runtime_env_for_logs

        routing = runtime_env_for_logs(log_dir, log_run)
        env_vars.update(routing.pop("env_vars"))
        runtime_env = {**routing, **runtime_env}
    if runtime_env.get("env_vars"):
        env_vars.update(runtime_env["env_vars"])
    merged_env = {**runtime_env, "env_vars": env_vars}
    if address:
        context = ray.init(address=address, runtime_env=merged_env, log_to_driver=log_to_driver)
    else:
        # "local" always starts a new node: a stale /tmp/ray/ray_current_cluster left by another
        # cluster must not turn a laptop run into an attempt to join something else.
        context = ray.init(
            address="local",
            num_cpus=num_cpus,
            resources=resources,
            include_dashboard=False,
            object_store_memory=object_store_memory,
            runtime_env=merged_env,
            log_to_driver=log_to_driver,
        )
    return {"address": context.address_info.get("gcs_address"), "reused": False}


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
