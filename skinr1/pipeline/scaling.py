"""Elastic rollout scaling: the pool size a running GRPO job aims for, and how users change it.

The driver owns a small named Ray actor per job (`ScaleControl`). `skinr1 scale --job ID
--rollout-workers N` records a request there; between steps the driver reads it, clamps it to
[rollout.min_workers, rollout.max_workers] and resizes its pool. Without a request the driver aims
for max_workers, so the pool grows by itself when the cluster gains room (e.g. the autoscaler adds
a node, or a lost node comes back).

`skinr1 stop --job ID` records a stop request there: after the step in progress the driver commits
a checkpoint, writes `final/` from it and exits successfully (`StopRequested`), leaving the run
unfinished so that the same command resumes it. `ray job stop` instead kills the job mid-step: its
resume starts again from the last periodic checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

NAMESPACE = "skinr1"


class StopRequested(RuntimeError):
    """A GRPO run ended early on a user's stop request, with its checkpoint and `final/` written."""

    def __init__(self, step: int, steps: int):
        super().__init__(f"stopped on request after step {step} of {steps}: the checkpoint and final/ "
                         "hold that policy; the same command resumes the run")
        self.step, self.steps = step, steps


def control_name(job_id: str) -> str:
    return f"skinr1-rl-scale:{job_id}"


def submission_id(environ: Mapping[str, str]) -> str | None:
    """The `ray job submit` submission id (what `ray job list` shows), if this process is a job's entrypoint."""
    # The job supervisor hands the entrypoint its job config, metadata included, in this variable.
    raw = environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    return json.loads(raw).get("metadata", {}).get("job_submission_id") if raw else None


def current_job_id() -> str:
    """The submission id under `ray job submit`, else Ray's job id."""
    import ray

    return submission_id(os.environ) or ray.get_runtime_context().get_job_id()


def pool_target(requested: int | None, min_workers: int, max_workers: int) -> int:
    """The size the pool should have: the user's request, else as many as allowed, within bounds."""
    wanted = max_workers if requested is None else requested
    return max(min_workers, min(max_workers, wanted))


class ScaleControl:
    """Holds one job's scaling request and the driver's last report. Wrap with `ray.remote`."""

    def __init__(self, min_workers: int, max_workers: int):
        self.min_workers, self.max_workers = min_workers, max_workers
        self.requested: int | None = None
        self.stop = False
        self.last_report: dict[str, Any] = {}

    def request(self, workers: int) -> dict[str, Any]:
        if not self.min_workers <= workers <= self.max_workers:
            raise ValueError(
                f"--rollout-workers {workers} is outside this job's rollout.min_workers..max_workers "
                f"= {self.min_workers}..{self.max_workers}"
            )
        self.requested = workers
        return self.status()

    def request_stop(self) -> dict[str, Any]:
        self.stop = True
        return self.status()

    def requested_workers(self) -> int | None:
        return self.requested

    def stop_requested(self) -> bool:
        return self.stop

    def report(self, status: dict[str, Any]) -> None:
        self.last_report = dict(status)

    def status(self) -> dict[str, Any]:
        return {"requested": self.requested, "stop_requested": self.stop, "min_workers": self.min_workers, "max_workers": self.max_workers,
                **self.last_report}


def start_control(job_id: str, min_workers: int, max_workers: int):
    """The job's control actor (it lives as long as the driver: no detached leftovers).

    It is pinned to the driver's node: it holds the driver's state, and on a multi-node cluster it
    must not take a worker process (and a log) on a node that runs rollout or learner work.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    driver_node = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(ScaleControl).options(name=control_name(job_id), namespace=NAMESPACE, num_cpus=0,
                                            scheduling_strategy=driver_node).remote(min_workers, max_workers)


def _job_control(job_id: str):
    import ray

    try:
        return ray.get_actor(control_name(job_id), namespace=NAMESPACE)
    except ValueError as error:
        raise LookupError(f"no running GRPO job {job_id!r} on this cluster (is it still running? see `ray job list`)") from error


def request_scale(job_id: str, workers: int) -> dict[str, Any]:
    """Ask a running job for `workers` rollout actors; returns the job's scaling status."""
    import ray

    return ray.get(_job_control(job_id).request.remote(workers))


def request_stop(job_id: str) -> dict[str, Any]:
    """Ask a running job to stop after its current step (checkpoint and final/ written); returns its status."""
    import ray

    return ray.get(_job_control(job_id).request_stop.remote())
