"""A pool of rollout actors: balanced prompts, dead-actor replacement, resizing between steps.

Every actor receives the current policy before its first prompt (`_catch_up`), so growing the pool
or replacing a dead actor never serves stale weights. Work of an actor that dies mid-step is
resubmitted to its replacement: no prompt is lost or generated twice into the batch.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rollout.engine import EngineSettings
from rollout.sampling import RolloutRequest, RolloutResult, SamplingSettings

log = logging.getLogger(__name__)


@dataclass
class ActorResources:
    """Resources reserved per rollout actor."""

    num_cpus: float = 1.0
    """Logical CPUs per actor."""
    num_gpus: float = 0.0
    """GPUs per actor (tensor_parallel_size GPUs for a sharded engine)."""
    custom: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources an actor needs (e.g. {"rollout_slot": 1} to pin actors to prepared nodes)."""


@dataclass
class PolicyState:
    """What a fresh actor must load to serve the current policy."""

    version: int = 0
    adapter_files: Any = None
    """ObjectRef of the adapter's files (LoRA), or None."""
    weight_buckets: Any = None
    """ObjectRef of the full-weight buckets, or None."""


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous chunks whose sizes differ by at most one (balanced prompts per actor)."""
    parts = max(1, min(parts, len(items))) if items else 1
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        chunks.append(items[start:end])
        start = end
    return chunks


class RolloutPool:
    """N `RolloutWorker` actors that together generate one step's samples."""

    def __init__(
        self,
        model: str,
        engine: EngineSettings,
        num_workers: int,
        resources: ActorResources | None = None,
        initial_adapter: str | None = None,
        max_restarts_per_step: int = 2,
    ):
        self.model = model
        self.engine = engine
        self.resources = resources or ActorResources()
        self.initial_adapter = initial_adapter
        self.max_restarts_per_step = max_restarts_per_step
        self.policy = PolicyState()
        self.actors: dict[str, Any] = {}
        self._names = (f"rollout-{i}" for i in itertools.count())
        self.events: list[dict[str, Any]] = []
        self.resize(num_workers)

    # ----------------------------------------------------------------- membership
    @property
    def size(self) -> int:
        return len(self.actors)

    def _spawn(self) -> tuple[str, Any]:
        import ray

        from rollout.actor import RolloutWorker

        name = next(self._names)
        options: dict[str, Any] = {"num_cpus": self.resources.num_cpus, "num_gpus": self.resources.num_gpus}
        if self.resources.custom:
            options["resources"] = dict(self.resources.custom)
        actor = ray.remote(RolloutWorker).options(**options).remote(
            name, self.model, self.engine, self.initial_adapter
        )
        return name, actor

    def _catch_up(self, actor) -> None:
        """Bring a new actor to the current policy version before it sees a prompt."""
        import ray

        if self.policy.adapter_files is not None:
            ray.get(actor.load_adapter.remote(self.policy.version, self.policy.adapter_files))
        elif self.policy.weight_buckets is not None:
            ray.get(actor.load_weights.remote(self.policy.version, self.policy.weight_buckets))
        else:
            ray.get(actor.info.remote())  # wait until the engine is up

    def resize(self, target: int) -> dict[str, int]:
        """Grow or shrink to `target` actors (between steps). New actors start in parallel."""
        if target < 1:
            raise ValueError(f"the rollout pool needs at least one actor, asked for {target}")
        added = removed = 0
        new = [self._spawn() for _ in range(max(0, target - self.size))]
        for name, actor in new:
            self._catch_up(actor)
            self.actors[name] = actor
            added += 1
        while self.size > target:
            name, actor = self.actors.popitem()
            self._retire(actor)
            removed += 1
        if added or removed:
            self.events.append({"event": "resize", "added": added, "removed": removed, "size": self.size, "time": time.time()})
        return {"added": added, "removed": removed, "size": self.size}

    def _retire(self, actor) -> None:
        import ray

        try:
            ray.get(actor.shutdown.remote(), timeout=30)
        except Exception:  # an actor that is already gone needs no goodbye
            pass
        ray.kill(actor)

    def replace(self, name: str, reason: str) -> str:
        """Swap a dead actor for a fresh one at the current policy version."""
        dead = self.actors.pop(name)
        try:
            import ray

            ray.kill(dead)
        except Exception:
            pass
        new_name, actor = self._spawn()
        self._catch_up(actor)
        self.actors[new_name] = actor
        self.events.append({"event": "replace", "dead": name, "new": new_name, "reason": reason, "time": time.time()})
        log.warning("rollout actor %s replaced by %s: %s", name, new_name, reason)
        return new_name

    # ----------------------------------------------------------------- work
    def submit(self, requests: list[RolloutRequest], sampling: SamplingSettings, seed: int | None) -> dict[str, tuple[Any, list]]:
        """Start generation on every actor; returns {actor name: (ObjectRef, its requests)}."""
        chunks = split_evenly(requests, self.size)
        pending = {}
        for (name, actor), chunk in zip(list(self.actors.items()), chunks):
            if chunk:
                pending[name] = (actor.generate.remote(chunk, sampling, seed), chunk)
        return pending

    def collect(self, pending: dict[str, tuple[Any, list]], sampling: SamplingSettings, seed: int | None) -> list[RolloutResult]:
        """Wait for `submit`'s work; a dead actor is replaced and its prompts regenerated."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        results: dict[str, list[RolloutResult]] = {}
        restarts = 0
        order = list(pending)
        while pending:
            name, (ref, chunk) = next(iter(pending.items()))
            try:
                results[name] = ray.get(ref)
                del pending[name]
            except (RayActorError, ActorDiedError, ActorUnavailableError) as error:
                restarts += 1
                if restarts > self.max_restarts_per_step:
                    raise RuntimeError(f"rollout actors kept dying ({restarts} times this step)") from error
                new_name = self.replace(name, f"{type(error).__name__}")
                del pending[name]
                pending[new_name] = (self.actors[new_name].generate.remote(chunk, sampling, seed), chunk)
                order[order.index(name)] = new_name
        return [result for name in order for result in results[name]]

    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings, seed: int | None = None) -> list[RolloutResult]:
        return self.collect(self.submit(requests, sampling, seed), sampling, seed)

    # ----------------------------------------------------------------- weight sync
    def push_adapter(self, version: int, files: dict[str, bytes]) -> list[dict]:
        """Send a LoRA adapter version to every actor (one object-store copy shared by all)."""
        import ray

        self.policy = PolicyState(version=version, adapter_files=ray.put(files))
        return self._broadcast(lambda actor: actor.load_adapter.remote(version, self.policy.adapter_files))

    def push_weights(self, version: int, buckets: list) -> list[dict]:
        """Send full weights, bucketed: one remote call per actor carrying all bucket refs."""
        import ray

        self.policy = PolicyState(version=version, weight_buckets=ray.put(buckets))
        return self._broadcast(lambda actor: actor.load_weights.remote(version, self.policy.weight_buckets))

    def _broadcast(self, call) -> list[dict]:
        import ray
        from ray.exceptions import RayActorError

        reports = []
        for name in list(self.actors):
            try:
                reports.append(ray.get(call(self.actors[name])))
            except RayActorError as error:
                new_name = self.replace(name, f"died during weight sync: {type(error).__name__}")
                reports.append({"actor": new_name, "version": self.policy.version, "replaced": True})
        return reports

    def versions(self) -> dict[str, int]:
        import ray

        return {name: ray.get(actor.info.remote())["version"] for name, actor in self.actors.items()}

    def kill_actor(self, name: str) -> None:
        """Kill one actor without telling the pool (fault drills and tests)."""
        import ray

        ray.kill(self.actors[name], no_restart=True)

    def shutdown(self) -> None:
        for actor in list(self.actors.values()):
            self._retire(actor)
        self.actors.clear()
