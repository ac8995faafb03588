"""Where output goes: a person reads progress, summaries and warnings; framework logs go to files.

Ray, vLLM and DeepSpeed write hundreds of INFO lines (engine start-up, weight reloads, ZeRO set-up)
that drown a run's progress. When a run directory is known, `route_driver_logs` sends the driver's
log records to <run_dir>/logs/driver.log and shows only this project's warnings and anyone's
errors on screen; every vLLM process logs to <run_dir>/logs/vllm.log (`vllm_logging_config`); every
Ray worker process of the run runs `worker_process_setup` (a Ray `worker_process_setup_hook`): its
standard output and error go to <run_dir>/logs/worker-<pid>.log, and only this project's warnings
and anyone's errors still reach the original standard error, which Ray relays to the driver's screen.
An engine started in the driver itself (evaluation) has its engine-core process's output sent to
<run_dir>/logs/vllm-engines.log (`child_output_to_log`).
Tracebacks of failed tasks reach the driver through Ray's exceptions, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

LOG_DIR_ENV = "SKINR1_LOG_DIR"
"""Set in a run's Ray runtime environment: the directory worker processes write their logs to."""
LOG_RUN_ENV = "SKINR1_LOG_RUN"
"""Set instead for a run_dir in a bucket: its URI. No node sees the driver's mirror, so each worker
logs into its own node's mirror of the run (`<mirror>/logs`, skinr1.run_mirror.mirror_root)."""
WORKER_SETUP_HOOK = "skinr1.logs.worker_process_setup"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VLLM_CONFIG_ENV = "VLLM_LOGGING_CONFIG_PATH"
NO_FRAMEWORK_BARS = ("HF_HUB_DISABLE_PROGRESS_BARS", "1")
"""transformers' and the hub's own bars (weight loading, shard writing): the stages draw theirs."""
_driver_log_dir: Path | None = None
"""Where `route_driver_logs` sends this process's records (None: it was not called here)."""


def vllm_logging_config(log_dir: Path) -> Path:
    """Write the logging config that every vLLM process applies at import (the driver, rollout
    actors and the engine-core subprocesses they spawn alike): records to <log_dir>/vllm.log,
    errors also on screen. Returns its path."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(log_dir / "vllm.log"), "formatter": "plain", "level": "INFO"},
            "screen": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain", "level": "ERROR"},
        },
        "loggers": {"vllm": {"handlers": ["file", "screen"], "level": "INFO", "propagate": False}},
    }
    path = log_dir / "vllm_logging.json"
    path.write_text(json.dumps(config, indent=2))
    return path


OWN_LOGGERS = ("skinr1", "learner", "rollout", "rewards", "__main__")
"""This project's loggers: their warnings reach the screen. Frameworks' warnings (vLLM's notes on
Triton or chunked prefill, DeepSpeed's on the accelerator) go to the log files; their errors show."""


SELF_PRINTING_LOGGERS = ("DeepSpeed",)
"""Frameworks' loggers with a screen handler of their own that do not propagate to the root logger
(DeepSpeed prints "Setting accelerator to CPU" on import). A filter on the logger itself, set
before the framework is imported and kept by it, sends their records to driver.log and lets only
errors through to that handler."""


class _IntoLogFile(logging.Filter):
    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.handler.handle(record)
        return record.levelno >= logging.ERROR


class _ScreenFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".")[0] in OWN_LOGGERS


def _install(root: logging.Logger, handler: logging.Handler, level: int) -> None:
    if level >= logging.WARNING:
        handler.addFilter(_ScreenFilter())
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.skinr1 = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def route_driver_logs(log_dir: str | Path) -> Path:
    """Driver process: records of every logger to <log_dir>/driver.log; this project's warnings and
    anyone's errors also on screen. Idempotent. Returns the log file's path."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Read when vLLM is first imported (later in the run); a user's own config wins.
    os.environ.setdefault(VLLM_CONFIG_ENV, str(vllm_logging_config(log_dir)))
    os.environ.setdefault(*NO_FRAMEWORK_BARS)
    path = log_dir / "driver.log"
    global _driver_log_dir
    _driver_log_dir = log_dir
    root = logging.getLogger()
    if not any(getattr(h, "skinr1", False) for h in root.handlers):
        root.setLevel(logging.INFO)
        log_file = logging.FileHandler(path, encoding="utf-8")
        _install(root, log_file, logging.INFO)
        _install(root, logging.StreamHandler(sys.stderr), logging.WARNING)
        for name in SELF_PRINTING_LOGGERS:
            logging.getLogger(name).addFilter(_IntoLogFile(log_file))
    return path


@contextlib.contextmanager
def child_output_to_log(name: str):
    """Processes started inside the block write their standard output and error to
    <driver log dir>/<name>.log, not the screen. For vLLM's engine-core process when an engine runs
    in the driver (evaluation, benchmarks): it prints Triton, NUMA-binding and deprecation notes at
    start-up, outside the logging config. A Ray worker's descriptors already lead to its log file, and
    a driver without `route_driver_logs` keeps its screen: there the block changes nothing. While the
    block runs, the driver's own output goes to that file too (an engine start: no progress to show);
    an exception leaving the block reaches the screen as usual."""
    if _driver_log_dir is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(_driver_log_dir / f"{name}.log", "a", encoding="utf-8") as log_file:
            os.dup2(log_file.fileno(), 1)
            os.dup2(log_file.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)


def worker_log_dir(environ: dict[str, str]) -> Path | None:
    """Where a worker process with this environment writes its logs (None: where Ray puts them)."""
    if environ.get(LOG_RUN_ENV):
        from skinr1.run_mirror import mirror_root

        return mirror_root(environ[LOG_RUN_ENV]) / "logs"
    return Path(environ[LOG_DIR_ENV]) if environ.get(LOG_DIR_ENV) else None


def worker_process_setup() -> None:
    """Ray worker process start-up (see the module docstring); does nothing without LOG_DIR_ENV
    or LOG_RUN_ENV."""
    log_dir = worker_log_dir(dict(os.environ))
    if log_dir is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get(LOG_RUN_ENV):  # the driver's vLLM config names a file on its own node
        os.environ.setdefault(VLLM_CONFIG_ENV, str(vllm_logging_config(log_dir)))
    screen = os.fdopen(os.dup(2), "w", buffering=1)  # what Ray relays to the driver
    sys.stdout.flush()
    sys.stderr.flush()
    log_file = open(Path(log_dir) / f"worker-{os.getpid()}.log", "a", buffering=1, encoding="utf-8")
    # At the descriptor level, so that child processes (vLLM's engine core) and C++ code follow.
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    _install(root, logging.StreamHandler(log_file), logging.INFO)
    _install(root, logging.StreamHandler(screen), logging.WARNING)


def runtime_env_for_logs(log_dir: str | Path, run_uri: str | None = None) -> dict:
    """The runtime-env entries that route a run's worker logs to `log_dir`, or for a run_dir in a
    bucket (`run_uri`) to each node's own mirror of the run."""
    log_dir = Path(log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    own_config = str(log_dir / "vllm_logging.json")
    vllm_config = os.environ.get(VLLM_CONFIG_ENV) or str(vllm_logging_config(log_dir))
    env_vars = {NO_FRAMEWORK_BARS[0]: NO_FRAMEWORK_BARS[1]}
    if run_uri is None:
        env_vars.update({LOG_DIR_ENV: str(log_dir), VLLM_CONFIG_ENV: vllm_config})
    else:
        env_vars[LOG_RUN_ENV] = run_uri
        if vllm_config != own_config:  # a config of the user's own is theirs to provide on every node
            env_vars[VLLM_CONFIG_ENV] = vllm_config
    return {"worker_process_setup_hook": WORKER_SETUP_HOOK, "env_vars": env_vars}
