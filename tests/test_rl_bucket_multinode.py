"""GRPO with its run directory in a bucket on a two-node Ray cluster with no shared file system.

A loopback head and a second node whose processes have their own SKINR1_CACHE and, where this
machine allows a private mount namespace, cannot see the drivers' caches at all (a tmpfs hides
them). Custom resources put one learner rank on each node and the rollout actor on the second. The first
driver stops after step 1's committed checkpoint; a second driver, with an empty cache of its own,
resumes from the bucket and runs step 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopback_nodes import start_node
from skinr1 import storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = str(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml")
BUCKET = "skinr1-runs"  # made by the session's `bucket_env` (conftest.py)
HEAD_SLOTS = '{"learner_slot": 1}'  # one learner rank on each node; the one rollout actor on the second
SECOND_SLOTS = '{"learner_slot": 1, "rollout_slot": 1}'
OVERRIDES = ["data.synthetic_scale=0.05", "model.perception_pretraining.images=0", "rl.steps=2",
             "rl.checkpoint_every=1", "rl.prompts_per_step=4", "rl.sampling.group_size=2", "rl.sampling.max_tokens=16",
             "rl.learner.micro_batch_size=2", "rl.rollout.max_model_len=512", "rl.probe_every=0", "rl.validate_every=0",
             "rl.loss.filter_constant_groups=false", "rl.learner.num_ranks=2", "rl.learner.deepspeed.zero_stage=2",
             "rl.learner.custom_resources.learner_slot=1", "rl.rollout.num_workers=1", "rl.rollout.min_workers=1",
             "rl.rollout.max_workers=1", "rl.rollout.resources.custom.rollout_slot=1"]


def _env(cache: Path, bucket_env: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(bucket_env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", SKINR1_NO_PROGRESS="1",
               PYTHONUNBUFFERED="1", SKINR1_CACHE=str(cache))
    return env


def _hidden_from_node(directory: Path) -> list[str]:
    """A command prefix that runs a node in a private mount namespace where `directory` (holding a
    file `probe`) is an empty tmpfs; [] where this machine allows none (the test then relies on
    what the caches hold)."""
    script = f'mount -t tmpfs skinr1-hidden "{directory}" && exec "$@"'
    for unshare in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*unshare, "sh", "-c", script, "sh", "test", "!", "-e", str(directory / "probe")],
                               capture_output=True)
        if probe.returncode == 0:
            return [*unshare, "sh", "-c", script, "sh"]
    return []


def _wait_started(log: Path, node: subprocess.Popen) -> None:
    deadline = time.time() + 180
    while "Ray runtime started" not in log.read_text():
        assert node.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(1)


def _rank_shards(files) -> set[str]:
    return {name.split("/")[-1].split("_mp_rank")[0] for name in files if "_optim_states" in name}


def _second_node_roles(node_cache: Path) -> set[str]:
    """The actor classes whose output the second node's workers logged (Ray marks each actor's
    output with `:actor_name:<class>`), once for each of the two drivers' jobs."""
    roles = {}
    for log in node_cache.glob("runs/*/logs/worker-*.log"):
        lines = log.read_text().splitlines()
        job = next((line for line in lines if line.startswith(":job_id:")), None)
        for line in lines:
            if line.startswith(":actor_name:"):
                roles.setdefault(line.removeprefix(":actor_name:"), set()).add(job)
    return {role for role, jobs in roles.items() if len(jobs) == 2}


def test_grpo_on_two_nodes_without_a_shared_file_system(bucket_env, tmp_path):
    from learner.group import free_port

    drivers = tmp_path / "drivers"  # every driver's cache (its mirror of the run) lives under here
    drivers.mkdir()
    (drivers / "probe").write_text("the drivers' disk")
    hide = _hidden_from_node(drivers)
    gcs = f"127.0.0.1:{free_port()}"
    head_cache, node_cache = drivers / "first", tmp_path / "node-2"
    head = start_node(["--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=6", f"--resources={HEAD_SLOTS}",
                       "--include-dashboard=false"], tmp_path / "head.log", _env(head_cache, bucket_env))
    second = None
    try:
        _wait_started(tmp_path / "head.log", head)
        second = start_node([f"--address={gcs}", "--num-cpus=4", f"--resources={SECOND_SLOTS}"], tmp_path / "node-2.log",
                            _env(node_cache, bucket_env), head=False, wrap=hide)
        _wait_started(tmp_path / "node-2.log", second)
        uri = f"s3://{BUCKET}/multinode"
        command = [str(Path(sys.executable).with_name("skinr1")), "rl", "--skip-sft", "--config", CONFIG,
                   f"run_dir={uri}", f"ray.address={gcs}", *OVERRIDES]
        first = subprocess.run([*command, "rl.stop_after_step=1"], env=_env(head_cache, bucket_env),
                               capture_output=True, text=True, timeout=600)
        assert "stopped after step 1" in first.stdout + first.stderr, (first.stdout + first.stderr)[-4000:]

        checkpoints = storage.location(uri).child("rl", "checkpoints")
        step1 = storage.latest_committed(checkpoints)
        assert step1 is not None and step1.step == 1
        # Both ranks' optimizer shards (one written and uploaded on the second node), the policy
        # (rank 0) and the driver's state, all in the commit's manifest.
        assert _rank_shards(step1.files) == {"zero_pp_rank_0", "zero_pp_rank_1"}, sorted(step1.files)
        assert {"driver_state.json", "policy/adapter_model.safetensors"} <= set(step1.files)
        # The second node copied the starting point (the base model stage) from the bucket itself,
        # and nothing a rank wrote passed through the driver's mirror.
        assert [p for p in (node_cache / "models").iterdir() if (p / ".complete").is_file()]
        mirror = next((head_cache / "runs").iterdir())
        assert not list(mirror.glob("rl/checkpoints/**/*.pt")), sorted(map(str, mirror.rglob("*.pt")))

        # A new driver with nothing local resumes from the bucket on the same cluster.
        resumed = subprocess.run(command, env=_env(drivers / "second", bucket_env), capture_output=True, text=True,
                                 timeout=600)
        output = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, output[-4000:]
        assert f"resuming from {step1.location.uri} (step 1)" in output, output[-4000:]
    finally:
        for node in (second, head):
            if node is not None and node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=120)
    remote = storage.location(uri)
    rows = [json.loads(line) for line in storage.read_text(remote.child("rl", "metrics.jsonl")).splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    step2 = storage.latest_committed(checkpoints)
    assert step2.step == 2 and _rank_shards(step2.files) == {"zero_pp_rank_0", "zero_pp_rank_1"}
    assert "rl/final/adapter_model.safetensors" in storage.list_files(remote)
    # A learner rank and the rollout actor of each driver ran on the second node, and logged into
    # its own mirror of the run, not into a driver's.
    assert _second_node_roles(node_cache) == {"LearnerRank", "RolloutWorker"}
    print(f"second node in a private mount namespace: {'yes' if hide else 'no'}")
