"""What a person sees: framework logs routed to files, warnings still on screen, driver-side
progress bars that follow the workers' metrics, and one-screen stage summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from skinr1.pipeline.summaries import grpo_summary, sft_summary
from skinr1.progress import FollowMetrics

_CHATTY_PROCESS = """
import logging, os, subprocess, sys
from skinr1.logs import {setup}
{setup}({arg})
print("framework chatter on stdout")
logging.getLogger("vllm.engine").info("engine started")
logging.getLogger("skinr1.driver").warning("a warning that matters")
logging.getLogger("vllm.config").warning("framework note")
logging.getLogger("vllm.engine").error("framework error")
subprocess.run(["sh", "-c", "echo child process output >&2"])
"""


def _run(setup: str, arg: str, env: dict) -> subprocess.CompletedProcess:
    code = _CHATTY_PROCESS.format(setup=setup, arg=arg)
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_worker_output_goes_to_its_log_file_and_only_warnings_reach_the_screen(tmp_path):
    done = _run("worker_process_setup", "", {"SKINR1_LOG_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    [log] = list(tmp_path.glob("worker-*.log"))
    text = log.read_text()
    for line in ("framework chatter on stdout", "engine started", "a warning that matters", "child process output"):
        assert line in text, text
    screen = done.stdout + done.stderr
    assert "a warning that matters" in screen and "framework error" in screen
    assert "framework note" in text and "framework note" not in screen
    assert "framework chatter" not in screen and "engine started" not in screen and "child process" not in screen


def test_worker_setup_does_nothing_outside_a_routed_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SKINR1_LOG_DIR"}
    done = subprocess.run([sys.executable, "-c", _CHATTY_PROCESS.format(setup="worker_process_setup", arg="")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert "framework chatter on stdout" in done.stdout


def test_a_bucket_runs_workers_log_into_their_own_nodes_mirror(tmp_path, monkeypatch):
    """No node sees the driver's mirror: the runtime env names the run, each worker its own node's
    mirror of it, and writes its own vLLM logging config there (the driver's names its own disk)."""
    from skinr1.logs import LOG_DIR_ENV, LOG_RUN_ENV, VLLM_CONFIG_ENV, runtime_env_for_logs
    from skinr1.run_mirror import mirror_root

    uri = "s3://bucket/runs/r1"
    monkeypatch.delenv(VLLM_CONFIG_ENV, raising=False)
    monkeypatch.delenv(LOG_DIR_ENV, raising=False)
    routed = runtime_env_for_logs(tmp_path / "driver-mirror" / "logs", uri)["env_vars"]
    assert routed[LOG_RUN_ENV] == uri and LOG_DIR_ENV not in routed and VLLM_CONFIG_ENV not in routed
    monkeypatch.setenv("SKINR1_CACHE", str(tmp_path / "other-node"))
    logs = mirror_root(uri) / "logs"
    code = _CHATTY_PROCESS.format(setup="worker_process_setup", arg="") + f"print(os.environ[{VLLM_CONFIG_ENV!r}])"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **routed}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [log] = list(logs.glob("worker-*.log"))
    assert logs.is_relative_to(tmp_path / "other-node") and "framework chatter on stdout" in log.read_text()
    config = logs / "vllm_logging.json"
    assert str(config) in log.read_text()
    assert json.loads(config.read_text())["handlers"]["file"]["filename"] == str(logs / "vllm.log")


def test_driver_records_go_to_driver_log_and_warnings_to_the_screen(tmp_path):
    done = _run("route_driver_logs", repr(str(tmp_path)), {})
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "driver.log").read_text()
    assert "engine started" in text and "a warning that matters" in text
    assert "a warning that matters" in done.stderr and "engine started" not in done.stderr


def test_deepspeeds_own_screen_handler_is_routed_to_the_driver_log(tmp_path):
    """DeepSpeed's logger prints to stdout through a handler of its own and does not propagate: its
    notes ("Setting accelerator to CPU") go to driver.log, its errors still reach the screen."""
    code = (f"from skinr1.logs import route_driver_logs; route_driver_logs({str(tmp_path)!r})\n"
            "from deepspeed.utils import logger\n"
            "logger.warning('a deepspeed note'); logger.error('a deepspeed error')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "driver.log").read_text()
    assert "a deepspeed note" in text and "a deepspeed error" in text
    screen = done.stdout + done.stderr
    assert "a deepspeed note" not in screen and "Setting accelerator" not in screen and "a deepspeed error" in screen


def test_a_process_the_driver_starts_writes_into_the_run_log_and_the_screen_comes_back(tmp_path):
    """An engine started in the driver (evaluation) spawns vLLM's engine-core process, which prints
    start-up notes outside any logging config: they go to a log file, the driver's own lines after
    the block to the screen."""
    code = (f"import subprocess, sys; from skinr1.logs import child_output_to_log, route_driver_logs\n"
            f"with child_output_to_log('engines'):\n"
            f"    subprocess.run(['sh', '-c', 'echo before routing >&2'])\n"
            f"route_driver_logs({str(tmp_path)!r})\n"
            f"with child_output_to_log('engines'):\n"
            f"    subprocess.run(['sh', '-c', 'echo engine chatter >&2; echo engine stdout'])\n"
            f"print('driver output after the engine started', file=sys.stderr)\n"
            f"try:\n"
            f"    with child_output_to_log('engines'):\n"
            f"        raise ValueError('engine failed to start')\n"
            f"except ValueError as error:\n"
            f"    print(f'caught: {{error}}', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "engines.log").read_text()
    assert "engine chatter" in log and "engine stdout" in log
    assert "engine chatter" not in done.stderr and "engine stdout" not in done.stdout
    assert "before routing" in done.stderr  # no routed run: the screen is left alone
    assert "driver output after the engine started" in done.stderr and "caught: engine failed to start" in done.stderr


def test_progress_follows_the_rows_rank_zero_appends(tmp_path, monkeypatch):
    monkeypatch.delenv("SKINR1_NO_PROGRESS", raising=False)
    metrics = tmp_path / "metrics.jsonl"
    with FollowMetrics(metrics, "sft", poll_s=60) as follow:
        with open(metrics, "w") as handle:
            handle.write(json.dumps({"step": 1, "loss": 2.5, "total_steps": 40}) + "\n")
            handle.write(json.dumps({"step": 2, "loss": 2.0, "total_steps": 40}) + "\n")
            handle.write('{"step": 3, "lo')  # a row still being written
        follow._read()
        assert (follow._bar.n, follow._bar.total) == (2, 40)
        with open(metrics, "a") as handle:
            handle.write('ss": 1.5, "total_steps": 40}\n')
        follow._read()
        assert follow._bar.n == 3 and "1.500" in str(follow._bar.postfix)


def test_rows_reach_a_callback_as_they_appear_without_a_bar(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINR1_NO_PROGRESS", "1")
    metrics, seen = tmp_path / "metrics.jsonl", []
    with FollowMetrics(metrics, "sft", poll_s=60, on_row=seen.append) as follow:
        metrics.write_text(json.dumps({"step": 1, "loss": 2.5}) + "\n" + '{"step": 2')
        follow._read()
        assert seen == [{"step": 1, "loss": 2.5}] and follow._bar is None
        with open(metrics, "a") as handle:
            handle.write(', "loss": 2.0}\n')
    assert seen == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}]  # the last rows are read on exit


def test_stage_summaries_fit_on_one_screen():
    sft = [{"step": i + 1, "loss": 3.0 - 0.1 * i, "seconds": 0.1} for i in range(20)]
    assert sft_summary(sft) == "sft: 20 steps, loss 2.550 -> 1.550 (means of the first/last 10 steps), 10.0 steps/s"
    rows = [{"step": i + 1, "policy_version": i + 1, "skipped_steps": 0, "reward_mean": 1.0 + 0.01 * i, "kl": 0.01,
             "entropy": 1.2, "truncation_rate": 0.0, "reward_error_rate": 0.0, "step_s": 6.0, "generate_s": 4.0,
             "learn_s": 1.8, "sync_s": 0.2} for i in range(20)]
    rows[0].update(probe_policy_version=0, probe_reward_mean=1.2, val_policy_version=0, val_leaf_accuracy=0.3, val_leaf_ci=[0.2, 0.4])
    rows[-1].update(probe_policy_version=20, probe_reward_mean=1.4, val_policy_version=20, val_leaf_accuracy=0.5, val_leaf_ci=[0.4, 0.6])
    text = grpo_summary(rows)
    assert "20 steps, 20 updates, 0 steps skipped" in text
    assert "training reward 1.045 -> 1.145" in text
    assert "v0 1.200, v20 1.400" in text and "v0 0.300 [0.20, 0.40], v20 0.500 [0.40, 0.60]" in text
    assert "step 6.00 s, generate 4.00 s, learn 1.80 s, sync 0.20 s" in text
    assert len(text.splitlines()) <= 8


def test_every_vllm_process_logs_to_the_run_and_shows_only_errors(tmp_path):
    from skinr1.logs import vllm_logging_config

    config = vllm_logging_config(tmp_path)
    code = ("import json, logging, logging.config, sys; logging.config.dictConfig(json.load(open(sys.argv[1]))); "
            "log = logging.getLogger('vllm.v1.engine.core'); log.info('engine ready'); log.warning('no triton'); "
            "log.error('engine failed')")
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, timeout=60)
    text = (tmp_path / "vllm.log").read_text()
    assert "engine ready" in text and "no triton" in text and "engine failed" in text
    assert "engine failed" in done.stderr and "no triton" not in done.stderr and "engine ready" not in done.stderr
