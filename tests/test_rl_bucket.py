"""A run whose run_dir is a bucket (an S3-compatible server on 127.0.0.1): the stages up to SFT run
on one "node" (Ray Train writes SFT's checkpoints to the bucket), the GRPO driver on a second is
killed after its second committed checkpoint, and a driver on a third node, with nothing local,
resumes from the bucket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skinr1 import storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CONFIG = str(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml")
BUCKET = "skinr1-runs"  # made by the session's `bucket_env` (conftest.py)
OVERRIDES = ["data.synthetic_scale=0.1", "model.perception_pretraining.images=32", "model.perception_pretraining.epochs=1", "sft.max_steps=2", "sft.checkpoint_every=2", "rl.steps=3",
             "rl.checkpoint_every=1", "rl.prompts_per_step=4", "rl.sampling.group_size=2", "rl.sampling.max_tokens=32",
             "rl.learner.micro_batch_size=2", "rl.rollout.max_model_len=512", "rl.probe_every=0", "rl.validate_every=0"]


def _env(node_cache: Path, bucket_env: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(bucket_env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", SKINR1_NO_PROGRESS="1",
               PYTHONUNBUFFERED="1", SKINR1_CACHE=str(node_cache))
    return env


def test_grpo_driver_killed_then_resumed_from_the_bucket(bucket_env, tmp_path):
    from learner.sft_worker import TRAINER_STATE

    uri = f"s3://{BUCKET}/run"
    skinr1 = str(Path(sys.executable).with_name("skinr1"))
    # Node "prep": the stages up to SFT, in a process of its own whose Ray workers (Ray Train's SFT
    # workers upload their checkpoints themselves) get the bucket's credentials from the environment.
    prep = subprocess.run([skinr1, "sft", "--config", CONFIG, f"run_dir={uri}", *OVERRIDES],
                          env=_env(tmp_path / "node-prep", bucket_env), capture_output=True, text=True, timeout=900)
    assert prep.returncode == 0, (prep.stdout + prep.stderr)[-4000:]
    remote = storage.location(uri)
    stored = set(storage.list_files(remote))
    assert {"sft/stage.json", "sft/final/skinr1_policy.json"} <= stored
    # SFT's checkpoints went to the bucket through Ray Train's storage, not to the node's disk.
    assert any(name.startswith("sft/ray/sft/checkpoint_") and name.endswith(f"/{TRAINER_STATE}") for name in stored), sorted(stored)
    prep_mirror = next((tmp_path / "node-prep" / "runs").iterdir())
    assert (prep_mirror / "sft" / "final").is_dir() and not (prep_mirror / "sft" / "ray").exists()

    command = [skinr1, "rl", "--config", CONFIG, f"run_dir={uri}", *OVERRIDES]
    log = open(tmp_path / "killed.log", "w")
    first = subprocess.Popen(command, env=_env(tmp_path / "node-a", bucket_env), stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    checkpoints = remote.child("rl", "checkpoints")
    deadline = time.time() + 900
    while first.poll() is None and time.time() < deadline:
        latest = storage.latest_committed(checkpoints)
        if latest is not None and latest.step >= 2:
            break
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray node it started die at once
    first.wait(timeout=60)
    log.close()
    assert storage.latest_committed(checkpoints).step == 2, (tmp_path / "killed.log").read_text()[-4000:]

    resumed = subprocess.run(command, env=_env(tmp_path / "node-b", bucket_env), capture_output=True, text=True,
                             timeout=900)
    output = resumed.stdout + resumed.stderr
    (tmp_path / "resumed.log").write_text(output)
    assert resumed.returncode == 0, output[-4000:]
    assert "[sft] reusing" in output and f"resuming from {uri}/rl/checkpoints/step-000002." in output, output[-4000:]
    files = storage.list_files(remote)
    assert {"rl/policy_base/stage.json", "rl/stage.json", "rl/final/skinr1_policy.json"} <= set(files)
    import json

    rows = [json.loads(line) for line in storage.read_text(remote.child("rl", "metrics.jsonl")).splitlines()]
    # Steps 1-2 came from the killed driver (pushed with its checkpoints); the resumed one ran step 3 only.
    assert [row["step"] for row in rows] == [1, 2, 3]
    print("\n".join(line for line in output.splitlines() if "resum" in line or "pulled" in line or "reusing" in line))
