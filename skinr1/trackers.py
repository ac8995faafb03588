"""Experiment trackers beside the run's own metrics.jsonl: TensorBoard, Weights & Biases, MLflow.

Each stage (sft, rl, eval) that logs is one tracker run, which receives the same scalars as
metrics.jsonl, the resolved config as its parameters and (eval) the report and figure as artifacts.
W&B and MLflow talk to a service: they run on a background thread behind a bounded queue, so a slow
or unreachable service never stalls or stops training; its first failure is logged once and the
tracker is dropped for the rest of the stage. Their packages are imported only when selected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

TRACKERS = ("jsonl", "tensorboard", "wandb", "mlflow")
IDS_FILE = "trackers.json"
"""Per stage directory: the W&B and MLflow run ids, so that a resumed stage continues its runs."""


@dataclass
class LoggingConfig:
    """Where metrics go besides the run directory."""

    trackers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    """Any of jsonl, tensorboard, wandb, mlflow. jsonl is required: progress bars, summaries and
    resumed runs read metrics.jsonl. wandb follows the WANDB_* variables (WANDB_MODE=offline,
    WANDB_API_KEY...); mlflow follows `mlflow_tracking_uri`."""
    project: str = "skinr1"
    """W&B project and MLflow experiment name."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking server (http://host:port) or store URI; empty: MLFLOW_TRACKING_URI, else
    MLflow's default (./mlruns)."""
    flush_timeout_s: float = 60.0
    """How long the end of a stage waits for W&B/MLflow to send what is queued before giving up
    (with a warning; training results are never held back by a tracker)."""

    def __post_init__(self) -> None:
        unknown = [name for name in self.trackers if name not in TRACKERS]
        if unknown:
            raise ValueError(f"logging.trackers: unknown {unknown}; choose from {list(TRACKERS)}")
        if "jsonl" not in self.trackers:
            raise ValueError("logging.trackers must include 'jsonl': progress, summaries and resume read metrics.jsonl")
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"logging.trackers lists a tracker twice: {self.trackers}")
        if self.flush_timeout_s <= 0:
            raise ValueError(f"logging.flush_timeout_s must be > 0, got {self.flush_timeout_s}")


class Tracker:
    """What a tracker receives. Subclasses override what their service stores."""

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None: ...

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self) -> None: ...


def scalars(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """(name, number) of every finite number in `values`; a nested dict's numbers as "key/sub"."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield f"{prefix}{key}", value


def flat_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A (dataclass) config as {"section.key": "value"}: the form run parameters take."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= flat_params(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value, default=str)
    return flat


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_params(self, params: dict[str, Any]) -> None:
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())))

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, settings: LoggingConfig, name: str, run_id: str, group: str, directory: Path):
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(project=settings.project, name=name, id=run_id, group=group, dir=str(directory),
                              resume="allow", reinit="create_new")

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_artifact(self, path: Path) -> None:
        artifact = self.wandb.Artifact(re.sub(r"[^\w.-]", "-", f"{self.run.name}-{path.name}"), type=path.suffix.lstrip(".") or "file")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    MAX_PARAMS_PER_BATCH = 100
    MAX_PARAM_CHARS = 6000

    def __init__(self, settings: LoggingConfig, name: str, run_id: str | None, tags: dict[str, str]):
        from mlflow import MlflowClient

        uri = settings.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        if uri and uri.startswith(("http://", "https://")):
            _probe(uri)  # MLflow's own retries would take minutes to give up on a closed port
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(settings.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(settings.project)
        if run_id is None:
            run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.run_id = run_id

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), float(v), now, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_mlflow_key(k), str(v)[: self.MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
        for start in range(0, len(items), self.MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + self.MAX_PARAMS_PER_BATCH])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _mlflow_key(key: str) -> str:
    return re.sub(r"[^\w\-. /:]", "_", key)


def _probe(uri: str) -> None:
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as error:
        raise ConnectionError(f"MLflow tracking server {uri} cannot be reached: {error}") from error


_STOP = object()


class BackgroundTracker(Tracker):
    """Runs a service tracker on its own thread: calls are queued (dropped when the queue is full),
    the first error is logged once and the tracker stops, training never waits on it."""

    def __init__(self, name: str, build: Callable[[], Tracker], flush_timeout_s: float, capacity: int = 10000):
        self.name = name
        self.flush_timeout_s = flush_timeout_s
        self.failed = False
        self.dropped = 0
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.thread = threading.Thread(target=self._serve, args=(build,), name=f"tracker-{name}", daemon=True)
        self.thread.start()

    def _serve(self, build: Callable[[], Tracker]) -> None:
        try:
            tracker = build()
        except Exception as error:
            self._fail(error)
            return
        while True:
            call = self.queue.get()
            if call is _STOP:
                break
            method, args = call
            try:
                getattr(tracker, method)(*args)
            except Exception as error:
                self._fail(error)
                break
        try:
            tracker.close()
        except Exception as error:
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        if not self.failed:
            log.warning("tracker %s disabled for this stage (training goes on): %s: %s", self.name,
                        type(error).__name__, error)
        self.failed = True
        while True:  # free the queue: nothing will consume it
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break

    def _submit(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        try:
            self.queue.put_nowait((method, args))
        except queue.Full:
            if self.dropped == 0:
                log.warning("tracker %s is falling behind; dropping rows until it catches up", self.name)
            self.dropped += 1

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self._submit("log_scalars", step, values)

    def log_params(self, params: dict[str, Any]) -> None:
        self._submit("log_params", params)

    def log_artifact(self, path: Path) -> None:
        self._submit("log_artifact", path)

    def close(self) -> None:
        if not self.failed:
            try:
                self.queue.put(_STOP, timeout=self.flush_timeout_s)
            except queue.Full:
                pass
        self.thread.join(self.flush_timeout_s)
        if self.thread.is_alive():
            log.warning("tracker %s did not finish sending within %.0f s; going on without it", self.name,
                        self.flush_timeout_s)


def stage_trackers(settings: LoggingConfig, stage_dir: Path, stage: str, run_name: str,
                   include_tensorboard: bool = True) -> list[Tracker]:
    """The trackers a stage logs to besides metrics.jsonl, opened (or resumed) for `stage`."""
    trackers: list[Tracker] = []
    if include_tensorboard and "tensorboard" in settings.trackers:
        trackers.append(TensorBoardTracker(stage_dir / "tensorboard"))
    ids = _run_ids(stage_dir)
    name = f"{run_name}-{stage}"
    if "wandb" in settings.trackers:
        wandb_id = ids.setdefault("wandb", uuid.uuid4().hex[:12])
        trackers.append(BackgroundTracker("wandb", lambda: WandbTracker(settings, name, wandb_id, run_name, stage_dir),
                                          settings.flush_timeout_s))
    if "mlflow" in settings.trackers:
        def build_mlflow() -> Tracker:
            tracker = MlflowTracker(settings, name, ids.get("mlflow"), {"skinr1.stage": stage, "skinr1.run": run_name})
            _save_run_ids(stage_dir, ids | {"mlflow": tracker.run_id})
            return tracker

        trackers.append(BackgroundTracker("mlflow", build_mlflow, settings.flush_timeout_s))
    if ids:
        _save_run_ids(stage_dir, ids)
    return trackers


def _run_ids(stage_dir: Path) -> dict[str, str]:
    path = stage_dir / IDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


_ids_lock = threading.Lock()


def _save_run_ids(stage_dir: Path, ids: dict[str, str]) -> None:
    from skinr1.data.records import write_text_atomic

    with _ids_lock:  # the MLflow thread records its run id while the stage starts
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stage_dir / IDS_FILE, json.dumps(_run_ids(stage_dir) | ids, indent=2))


def open_stage_trackers(config: Any, stage_dir: Path, stage: str, include_tensorboard: bool = True) -> list[Tracker]:
    """`stage_trackers` for a whole-run config (SkinR1Config), with the resolved config as parameters."""
    run_name = config.run_path.name + (f"-{config.variant}" if config.variant else "")
    trackers = stage_trackers(config.logging, stage_dir, stage, run_name, include_tensorboard)
    params = flat_params(config)
    for tracker in trackers:
        tracker.log_params(params)
    return trackers


@contextlib.contextmanager
def live_stage_rows(config: Any, stage_dir: Path, stage: str) -> Iterator[Callable[[dict], None] | None]:
    """`with live_stage_rows(...) as publish:` a function that sends one metrics row (as Ray Train
    workers append them to the stage's metrics.jsonl) to the service trackers while the stage runs;
    None when no service tracker is selected. The trackers close when the block ends."""
    trackers = open_stage_trackers(config, stage_dir, stage, include_tensorboard=False)
    if not trackers:
        yield None
        return

    def publish(row: dict) -> None:
        numbers = dict(scalars({k: v for k, v in row.items() if k not in ("step", "time")}))
        if numbers and isinstance(row.get("step"), int):
            for tracker in trackers:
                tracker.log_scalars(row["step"], numbers)

    try:
        yield publish
    finally:
        for tracker in trackers:
            tracker.close()


def publish_report(config: Any, stage_dir: Path, report: dict[str, Any], files: Iterable[Path]) -> None:
    """An evaluation's numbers (as step 0) and its report files (JSON, Markdown, figure) as artifacts."""
    trackers = open_stage_trackers(config, stage_dir, "eval", include_tensorboard=False)
    numbers = dict(scalars(report))
    try:
        for tracker in trackers:
            tracker.log_scalars(0, numbers)
            for path in files:
                tracker.log_artifact(Path(path))
    finally:
        for tracker in trackers:
            tracker.close()
