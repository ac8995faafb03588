"""Trackers: the same scalars, the resolved config and the eval report reach W&B (offline run files)
and MLflow (a real tracking server on 127.0.0.1); an unreachable tracker warns once and never stops
training; the tracker packages are imported only when selected."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.group import free_port
from skinr1.config.schema import load_run_config
from skinr1.metrics import MetricsLogger, read_metrics
from skinr1.trackers import IDS_FILE, open_stage_trackers, publish_report

DEMO = Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml"
ROWS = [{"loss": 1.0 / (step + 1), "reward": {"mean": step * 0.5}, "note": "text is not a scalar"} for step in range(3)]
REPORT = {"checkpoints": {"sft": {"accuracy": {"level1": 0.5, "leaf": 0.25}}}, "n": 12}


def _config(tmp_path: Path, *overrides: str):
    return load_run_config(DEMO, [f"run_dir={tmp_path / 'run'}", *overrides])


def _log_a_stage_and_a_report(config, tmp_path: Path) -> None:
    rl_dir = config.rl_dir
    with MetricsLogger(rl_dir / "metrics.jsonl", trackers=open_stage_trackers(config, rl_dir, "rl")) as logger:
        for step, row in enumerate(ROWS, start=1):
            logger.log(step, row)
    eval_dir = config.run_path / "eval"
    eval_dir.mkdir(parents=True)
    files = [eval_dir / "report.json", eval_dir / "report.png"]
    files[0].write_text(json.dumps(REPORT))
    files[1].write_bytes(b"\x89PNG fake figure")
    publish_report(config, eval_dir, REPORT, files)


# ------------------------------------------------------------------------------------------- W&B
def _wandb_records(path: Path, timeout_s: float = 60.0) -> list:
    """The protobuf records of a finished offline run file. `run.finish()` returns before W&B's
    service process has necessarily written the file's end, so this waits for its exit record."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records, error = list(_parse_wandb_log(path.read_bytes())), None
        except DecodeError as cut_off:  # the last record is still being written
            records, error = [], cut_off
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no readable exit record after {timeout_s} s: {error}"
        time.sleep(0.2)


def _parse_wandb_log(data: bytes):
    """The protobuf records of an offline run file (LevelDB log framing after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _history(records) -> list[dict]:
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_holds_the_scalars_config_and_report(tmp_path, monkeypatch):
    import wandb  # noqa: F401  (dev extra: never skipped in CI)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _config(tmp_path, "logging.trackers=[jsonl,wandb]")
    _log_a_stage_and_a_report(config, tmp_path)

    rl_id = json.loads((config.rl_dir / IDS_FILE).read_text())["wandb"]
    run_files = list(config.rl_dir.glob(f"wandb/offline-run-*-{rl_id}/run-{rl_id}.wandb"))
    assert len(run_files) == 1, list(config.rl_dir.rglob("*"))
    records = _wandb_records(run_files[0])
    history = _history(records)
    assert [(h["_step"], h["loss"], h["reward/mean"]) for h in history] == [
        (step, ROWS[step - 1]["loss"], ROWS[step - 1]["reward"]["mean"]) for step in (1, 2, 3)]
    config_items = {item.key: json.loads(item.value_json) for r in records
                    if r.WhichOneof("record_type") in ("config", "run")
                    for item in (r.config.update if r.WhichOneof("record_type") == "config" else r.run.config.update)}
    assert config_items["rl.learner.learning_rate"] == json.dumps(config.rl.learner.learning_rate)
    assert config_items["run_dir"] == config.run_dir

    eval_id = json.loads((config.run_path / "eval" / IDS_FILE).read_text())["wandb"]
    eval_records = _wandb_records(next((config.run_path / "eval").glob(f"wandb/offline-run-*-{eval_id}/run-*.wandb")))
    artifacts = [r.artifact for r in eval_records if r.WhichOneof("record_type") == "artifact"]
    assert sorted((a.name, a.type) for a in artifacts) == [("run-eval-report.json", "json"), ("run-eval-report.png", "png")]
    assert sorted(entry.path for a in artifacts for entry in a.manifest.contents) == ["report.json", "report.png"]
    eval_history = _history(eval_records)
    assert eval_history[0]["checkpoints/sft/accuracy/leaf"] == 0.25


def test_sft_rows_reach_wandb_while_the_stage_runs(tmp_path, monkeypatch):
    """SFT's rows (appended by the Ray Train rank 0) are sent as the driver's follower reads them."""
    import wandb  # noqa: F401  (dev extra: never skipped in CI)
    from skinr1.progress import FollowMetrics
    from skinr1.trackers import live_stage_rows

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _config(tmp_path, "logging.trackers=[jsonl,wandb]")
    sft_dir = config.sft_dir
    sft_dir.mkdir(parents=True)
    sent = []
    with live_stage_rows(config, sft_dir, "sft") as publish:
        with FollowMetrics(sft_dir / "metrics.jsonl", "sft", poll_s=60, on_row=lambda row: (publish(row), sent.append(row["step"]))) as follow:
            for step, row in enumerate(ROWS, start=1):
                with open(sft_dir / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps({"step": step, **row}) + "\n")
                follow._read()
                assert sent[-1] == step  # published before the next step is written
    sft_id = json.loads((sft_dir / IDS_FILE).read_text())["wandb"]
    run_files = list(sft_dir.glob(f"wandb/offline-run-*-{sft_id}/run-{sft_id}.wandb"))
    assert len(run_files) == 1, list(sft_dir.rglob("*"))
    history = _history(_wandb_records(run_files[0]))
    assert [(h["_step"], h["loss"]) for h in history] == [(step, ROWS[step - 1]["loss"]) for step in (1, 2, 3)]


# ----------------------------------------------------------------------------------------- MLflow
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    import mlflow  # noqa: F401  (dev extra: never skipped in CI)
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    server = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                               "--artifacts-destination", str(root / "artifacts")], stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.mark.slow
def test_mlflow_server_receives_the_scalars_params_and_report(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    config = _config(tmp_path, "logging.trackers=[jsonl,tensorboard,mlflow]",
                     f"logging.mlflow_tracking_uri={mlflow_server}", "logging.project=skinr1-test")
    _log_a_stage_and_a_report(config, tmp_path)

    client = MlflowClient(tracking_uri=mlflow_server)
    rl_run = client.get_run(json.loads((config.rl_dir / IDS_FILE).read_text())["mlflow"])
    assert rl_run.info.status == "FINISHED" and rl_run.info.run_name == "run-rl"
    assert [(m.step, m.value) for m in client.get_metric_history(rl_run.info.run_id, "loss")] == [
        (step, ROWS[step - 1]["loss"]) for step in (1, 2, 3)]
    assert [m.value for m in client.get_metric_history(rl_run.info.run_id, "reward/mean")] == [0.0, 0.5, 1.0]
    assert rl_run.data.params["rl.learner.learning_rate"] == json.dumps(config.rl.learner.learning_rate)
    assert rl_run.data.params["logging.trackers"] == json.dumps(["jsonl", "tensorboard", "mlflow"])
    assert list((config.rl_dir / "tensorboard").glob("events.out.tfevents.*"))  # still written alongside

    eval_run = client.get_run(json.loads((config.run_path / "eval" / IDS_FILE).read_text())["mlflow"])
    assert eval_run.data.metrics["checkpoints/sft/accuracy/leaf"] == 0.25
    assert sorted(a.path for a in client.list_artifacts(eval_run.info.run_id)) == ["report.json", "report.png"]
    downloaded = client.download_artifacts(eval_run.info.run_id, "report.json", str(tmp_path))
    assert json.loads(Path(downloaded).read_text()) == REPORT


def test_an_unreachable_tracker_warns_once_and_training_goes_on(tmp_path, caplog):
    import mlflow  # noqa: F401  (dev extra: never skipped in CI)
    config = _config(tmp_path, "logging.trackers=[jsonl,mlflow]",
                     f"logging.mlflow_tracking_uri=http://127.0.0.1:{free_port()}", "logging.flush_timeout_s=20")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="skinr1.trackers"):
        with MetricsLogger(config.rl_dir / "metrics.jsonl", trackers=open_stage_trackers(config, config.rl_dir, "rl")) as logger:
            for step in range(1, 201):
                logger.log(step, {"loss": 1.0})
    assert time.monotonic() - started < 20
    assert \
        [row["step"] for row in read_metrics(config.rl_dir / "metrics.jsonl")] == list(range(1, 201))
    warnings = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(warnings) == 1 and "mlflow" in warnings[0] and "cannot be reached" in warnings[0], warnings


# ------------------------------------------------------------------------------- config and imports
@pytest.mark.parametrize("trackers, message", [("[jsonl,comet]", "unknown"), ("[tensorboard]", "must include 'jsonl'"),
                                               ("[jsonl,jsonl]", "twice")])
def test_bad_tracker_lists_are_refused_naming_the_key(tmp_path, trackers, message):
    with pytest.raises(ValueError, match=message) as error:
        _config(tmp_path, f"logging.trackers={trackers}")
    assert "logging.trackers" in str(error.value)


def test_default_trackers_are_jsonl_and_tensorboard_and_import_no_service_package(tmp_path):
    code = f"""
import sys
from skinr1.config.schema import load_run_config
from skinr1.metrics import MetricsLogger
from skinr1.trackers import open_stage_trackers
config = load_run_config({str(DEMO)!r}, ["run_dir={tmp_path / 'run'}"])
assert config.logging.trackers == ["jsonl", "tensorboard"], config.logging.trackers
with MetricsLogger(config.rl_dir / "metrics.jsonl", trackers=open_stage_trackers(config, config.rl_dir, "rl")) as logger:
    logger.log(1, {{"loss": 1.0}})
assert "wandb" not in sys.modules and "mlflow" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert list((tmp_path / "run" / "rl" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_resumed_run_drops_the_rows_logged_after_its_checkpoint_and_a_torn_line(tmp_path):
    from skinr1.metrics import drop_rows_after

    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as logger:
        for step in (1, 2, 3, 4):
            logger.log(step, {"loss": float(step)})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 5, "loss"')  # the line a crash cut short
    assert drop_rows_after(path, 2) == 3
    with MetricsLogger(path) as logger:  # the resumed run logs steps 3 and 4 again
        logger.log(3, {"loss": 30.0})
    assert [(row["step"], row["loss"]) for row in read_metrics(path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert drop_rows_after(path, 3) == 0 and drop_rows_after(tmp_path / "absent.jsonl", 0) == 0

    path.write_text('{"step": 1}\n{"step": 2}')  # a torn line that happens to parse: still no newline
    assert drop_rows_after(path, 9) == 1 and path.read_text() == '{"step": 1}\n'
