"""A pool of rollout actors: balanced prompts, dead-actor replacement, elastic resizing.

Each actor lives on its own placement group, so the pool can ask the cluster for room one actor at
a time: growing tries to place a new actor for a short while and gives up cleanly when the cluster
is full (for example after losing a node), and shrinking frees exactly one actor's resources.
Every actor receives the current policy before its first prompt (`_catch_up`), so growing the pool
or replacing a dead actor never serves stale weights. Work of an actor that dies mid-step goes to
its replacement, or to a surviving actor when there is no room for one: no prompt is lost or
generated twice into the batch.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rollout.engine import EngineSettings
from rollout.sampling import RolloutRequest, RolloutResult, SamplingSettings
from skinr1.config.checks import at_least, resource_amounts

log = logging.getLogger(__name__)


@dataclass
class ActorResources:
    """Resources reserved per rollout actor."""

    num_cpus: float = 1.0
    """Logical CPUs per actor."""
    num_gpus: float = 0.0
    """GPUs of a single-GPU engine's actor. A sharded engine (tensor_parallel_size > 1) gets one GPU
    bundle per shard in the actor's placement group instead (see skinr1.placement.rollout_bundles)."""
    custom: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources an actor needs (e.g. {"rollout_slot": 1} to pin actors to prepared nodes)."""

    def __post_init__(self) -> None:
        at_least("num_cpus", self.num_cpus, 0)
        at_least("num_gpus", self.num_gpus, 0)
        resource_amounts("custom", self.custom)


@dataclass
class PolicyState:
    """What a fresh actor must load to serve the current policy."""

    version: int = 0
    adapter_files: Any = None
    """ObjectRef of the adapter's files (LoRA), or None."""
    weight_buckets: Any = None
    """ObjectRef of the full-weight buckets, or None."""
    shared: dict[str, Any] | None = None
    """Where the version lies in the node's shared memory (sync_backend=shared_memory), or None."""
    lora_factors: Any = None
    """ObjectRef of the adapter's factors (LoRA merged by the actors), or None."""
    base_weights: Any = None
    """ObjectRef of the base weights those factors are merged into, or None."""
    bucket_bytes: int = 0
    """Bucket size of the actors' reloads of their merged weights."""


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


@dataclass
class Ticket:
    """One actor's share of a generation call."""

    actor_name: str
    ref: Any
    requests: list


@dataclass
class _Member:
    actor: Any
    group: Any
    """The actor's placement group (released with the actor)."""


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
        placement_timeout_s: float = 5.0,
        startup_timeout_s: float | None = 600.0,
    ):
        self.model = model
        self.engine = engine
        self.resources = resources or ActorResources()
        self.initial_adapter = initial_adapter
        self.max_restarts_per_step = max_restarts_per_step
        self.placement_timeout_s = placement_timeout_s
        self.policy = PolicyState()
        self.members: dict[str, _Member] = {}
        self.replaced_by: dict[str, str] = {}
        self._names = (f"rollout-{i}" for i in itertools.count())
        self.events: list[dict[str, Any]] = []
        # At start-up the job waits for its actors (an autoscaler may be adding nodes).
        report = self.resize(num_workers, timeout_s=startup_timeout_s, precheck=False)
        if report["size"] < num_workers:
            self.shutdown()
            raise RuntimeError(
                f"only {report['size']} of {num_workers} rollout actors could be placed within {startup_timeout_s} s; "
                f"each needs {self.bundles()} (see `ray status`)"
            )

    # ----------------------------------------------------------------- membership
    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def actors(self) -> dict[str, Any]:
        return {name: member.actor for name, member in self.members.items()}

    def bundles(self) -> list[dict[str, float]]:
        from skinr1.placement import rollout_bundles

        r = self.resources
        return rollout_bundles(r.num_cpus, r.num_gpus, r.custom, self.engine.tensor_parallel_size)

    def _spawn(self, timeout_s: float | None, precheck: bool = True) -> tuple[str, _Member] | None:
        """Place and start one actor; None when the cluster has no room within `timeout_s`.

        `precheck` skips the placement attempt when the free resources clearly do not suffice,
        so a full cluster costs nothing between steps."""
        import ray

        from rollout.actor import RolloutWorker
        from skinr1 import placement

        bundles = self.bundles()
        if precheck and not placement.fits(bundles, ray.available_resources()):
            return None
        name = next(self._names)
        group = placement.reserve(bundles, "STRICT_PACK", timeout_s, name=f"skinr1-{name}")
        if group is None:
            return None
        sharded = self.engine.tensor_parallel_size > 1
        options: dict[str, Any] = {
            "num_cpus": self.resources.num_cpus,
            # A sharded engine's GPUs belong to vLLM's own workers in the following bundles.
            "num_gpus": 0 if sharded else self.resources.num_gpus,
            "scheduling_strategy": placement.strategy(group, 0, capture_children=sharded),
        }
        if self.resources.custom:
            options["resources"] = dict(self.resources.custom)
        actor = ray.remote(RolloutWorker).options(**options).remote(name, self.model, self.engine, self.initial_adapter)
        return name, _Member(actor, group)

    def _catch_up(self, actor) -> None:
        """Bring a new actor to the current policy version before it sees a prompt."""
        import ray

        if self.policy.shared is not None:
            ray.get(actor.use_shared_policy.remote(self.policy.version, self.policy.shared))
        elif self.policy.adapter_files is not None:
            ray.get(actor.load_adapter.remote(self.policy.version, self.policy.adapter_files))
        elif self.policy.weight_buckets is not None:
            ray.get(actor.load_weights.remote(self.policy.version, self.policy.weight_buckets))
        elif self.policy.lora_factors is not None:
            ray.get(self._merge_call(actor))
        else:
            ray.get(actor.info.remote())  # wait until the engine is up

    def _admit(self, spawned: list[tuple[str, _Member]]) -> int:
        """Catch the started actors up (engines start in parallel) and add those that came up."""
        admitted = 0
        for name, member in spawned:
            try:
                self._catch_up(member.actor)
            except Exception as error:  # an engine that fails to start costs capacity, not the run
                log.warning("rollout actor %s failed to start: %s", name, error)
                self._retire(member)
                self.events.append({"event": "start_failed", "actor": name, "reason": type(error).__name__, "time": time.time()})
                continue
            self.members[name] = member
            admitted += 1
        return admitted

    def resize(self, target: int, timeout_s: float | None = None, precheck: bool = True) -> dict[str, int]:
        """Grow toward or shrink to `target` actors (between steps).

        Growth stops at the first actor the cluster has no room for within `timeout_s` (default:
        the pool's placement timeout); the report says how many were added.
        """
        if target < 1:
            raise ValueError(f"the rollout pool needs at least one actor, asked for {target}")
        timeout_s = self.placement_timeout_s if timeout_s is None else timeout_s
        spawned = []
        while self.size + len(spawned) < target:
            started = self._spawn(timeout_s, precheck)
            if started is None:
                break
            spawned.append(started)
        added = self._admit(spawned)
        removed = 0
        while self.size > target:
            # Newest first: the longest-lived actors keep their warm caches.
            name = next(reversed(self.members))
            self._retire(self.members.pop(name))
            removed += 1
        if added or removed:
            self.events.append({"event": "resize", "added": added, "removed": removed, "size": self.size, "time": time.time()})
        return {"added": added, "removed": removed, "size": self.size}

    def _retire(self, member: _Member) -> None:
        import ray

        from skinr1.placement import release

        try:
            ray.get(member.actor.shutdown.remote(), timeout=30)  # queued after any work in flight
        except Exception:  # an actor that is already gone needs no goodbye
            pass
        ray.kill(member.actor)
        release(member.group)

    def replace(self, name: str, reason: str) -> str | None:
        """Swap a dead actor for a fresh one at the current policy version; None if there is no
        room for one (its node is gone): the pool goes on smaller and regrows between steps."""
        import ray

        from skinr1.placement import release

        dead = self.members.pop(name)
        try:
            ray.kill(dead.actor)
        except Exception:
            pass
        release(dead.group)
        started = self._spawn(self.placement_timeout_s)
        if started is None or not self._admit([started]):
            self.events.append({"event": "lost", "dead": name, "reason": reason, "size": self.size, "time": time.time()})
            log.warning("rollout actor %s lost (%s); no room for a replacement, %d actors remain", name, reason, self.size)
            return None
        new_name = started[0]
        self.replaced_by[name] = new_name
        self.events.append({"event": "replace", "dead": name, "new": new_name, "reason": reason, "time": time.time()})
        log.warning("rollout actor %s replaced by %s: %s", name, new_name, reason)
        return new_name

    # ----------------------------------------------------------------- work
    def submit(self, requests: list[RolloutRequest], sampling: SamplingSettings, seed: int | None) -> list[Ticket]:
        """Start generation on every actor with a balanced share of `requests`."""
        chunks = split_evenly(requests, self.size)
        return [
            Ticket(name, member.actor.generate.remote(chunk, sampling, seed), chunk)
            for (name, member), chunk in zip(list(self.members.items()), chunks)
            if chunk
        ]

    def collect(self, tickets: list[Ticket], sampling: SamplingSettings, seed: int | None) -> list[RolloutResult]:
        """Wait for `submit`'s work, in submission order; a dead actor's share is regenerated."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        results: list[list[RolloutResult] | None] = [None] * len(tickets)
        queue = list(enumerate(tickets))
        restarts = 0
        while queue:
            index, ticket = queue.pop(0)
            try:
                results[index] = ray.get(ticket.ref)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as error:
                restarts += 1
                if restarts > self.max_restarts_per_step:
                    raise RuntimeError(f"rollout actors kept dying ({restarts} times this step)") from error
                name = self._take_over(ticket.actor_name, type(error).__name__)
                actor = self.members[name].actor
                queue.append((index, Ticket(name, actor.generate.remote(ticket.requests, sampling, seed), ticket.requests)))
        return [result for share in results for result in share]

    def _take_over(self, dead_name: str, reason: str) -> str:
        """The actor that redoes a dead actor's share: its replacement, else a survivor."""
        if dead_name in self.members:
            new_name = self.replace(dead_name, reason)
        else:  # already replaced (it died during a weight sync)
            new_name = self.replaced_by.get(dead_name)
        if new_name in self.members:
            return new_name
        if not self.members:
            raise RuntimeError("every rollout actor is gone and the cluster has no room for a new one")
        return min(self.members)  # a deterministic survivor

    @staticmethod
    def wait_idle(tickets: list[Ticket]) -> None:
        """Block until the tickets' generation has finished (without fetching the results)."""
        import ray

        refs = [t.ref for t in tickets]
        if refs:
            ray.wait(refs, num_returns=len(refs), fetch_local=False)

    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings, seed: int | None = None) -> list[RolloutResult]:
        return self.collect(self.submit(requests, sampling, seed), sampling, seed)

    # ----------------------------------------------------------------- weight sync
    def push_adapter(self, version: int, files: dict[str, bytes]) -> list[dict]:
        """Send a LoRA adapter version to every actor (one object-store copy shared by all)."""
        import ray

        self.policy = PolicyState(version=version, adapter_files=ray.put(files))
        return self._broadcast(lambda actor: actor.load_adapter.remote(version, self.policy.adapter_files))

    def push_weights(self, version: int, buckets) -> list[dict]:
        """Send full weights, bucketed (a list, or the object-store reference of one a learner put
        there): one remote call per actor; the object store holds one copy shared by all."""
        import ray

        ref = buckets if isinstance(buckets, ray.ObjectRef) else ray.put(buckets)
        self.policy = PolicyState(version=version, weight_buckets=ref)
        return self._broadcast(lambda actor: actor.load_weights.remote(version, self.policy.weight_buckets))

    def push_lora_factors(self, version: int, factors, base, bucket_bytes: int) -> list[dict]:
        """Send a LoRA adapter's factors, which every actor merges into the base weights (object-store
        references a learner put there; an actor fetches the base once and keeps it) and loads."""
        self.policy = PolicyState(version=version, lora_factors=factors, base_weights=base, bucket_bytes=bucket_bytes)
        return self._broadcast(self._merge_call)

    def _merge_call(self, actor):
        # The base travels inside a list: Ray would otherwise fetch it into the actor on every call.
        policy = self.policy
        return actor.merge_lora.remote(policy.version, policy.lora_factors, [policy.base_weights], policy.bucket_bytes)

    def push_shared(self, version: int, shared: dict[str, Any]) -> list[dict]:
        """Point every actor at a version published in the node's shared memory (only the path travels)."""
        self.policy = PolicyState(version=version, shared=shared)
        return self._broadcast(lambda actor: actor.use_shared_policy.remote(version, shared))

    def _broadcast(self, call) -> list[dict]:
        import ray
        from ray.exceptions import RayActorError

        refs = {name: call(member.actor) for name, member in self.members.items()}
        reports = []
        for name, ref in refs.items():
            try:
                reports.append(ray.get(ref))
            except RayActorError as error:
                # A replacement is caught up to the new policy before it joins.
                new_name = self.replace(name, f"died during weight sync: {type(error).__name__}")
                reports.append({"actor": new_name, "version": self.policy.version, "replaced": new_name is not None})
        return reports

    def versions(self) -> dict[str, int]:
        import ray

        return {name: ray.get(member.actor.info.remote())["version"] for name, member in self.members.items()}

    def kill_actor(self, name: str) -> None:
        """Kill one actor without telling the pool (fault drills and tests)."""
        import ray

        ray.kill(self.members[name].actor, no_restart=True)

    def shutdown(self) -> None:
        for member in list(self.members.values()):
            self._retire(member)
        self.members.clear()
