"""Shared fixtures: the tiny model is built once per session; Ray runs as one local loopback node;
the shipped taxonomy and label maps (a module may define its own `resolver`/`taxonomy` instead);
the GRPO integration tests' prepared run."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def resolver():
    """The shipped label maps over the shipped taxonomy."""
    from skinr1.taxonomy import load_resolver

    return load_resolver()


@pytest.fixture(scope="session")
def taxonomy(resolver):
    """The shipped disease taxonomy."""
    return resolver.taxonomy


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from skinr1.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def ray_local():
    """One loopback Ray node for the whole session (starting Ray costs seconds and ~0.5 GB)."""
    from skinr1.cluster import init_ray, shutdown_ray

    # Logical CPUs: room for 2 rollout actors, 2 learner ranks and a reward actor on a 2-core machine.
    init_ray(num_cpus=8)
    yield
    shutdown_ray()


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory, ray_local):
    """A small run's base model, data, trajectories and SFT (`grpo_run.prepare_run`), built once for
    the GRPO integration tests; the RL stage is left to them."""
    from grpo_run import prepare_run

    run_dir = tmp_path_factory.mktemp("rl-run")
    prepare_run(run_dir)
    return run_dir


RUN_BUCKET = "skinr1-runs"


@pytest.fixture(scope="session")
def bucket_env():
    """An S3-compatible server (moto) on 127.0.0.1 with the bucket `skinr1-runs`, for the whole
    session; yields the standard variables (also set here) that reach it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    variables = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    import boto3

    boto3.client("s3").create_bucket(Bucket=RUN_BUCKET)
    yield variables
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
