"""The reward actor: a thin Ray shell around `RewardScorer`, and a pool that spreads batches.

Records are plain dicts (`RewardSample.to_record(completion)`), so nothing but JSON-like data
crosses the object store. `RewardPool.submit` returns ObjectRefs at once; the driver gathers them
when it needs the rewards, so one slow batch never blocks the rollout loop.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import ray

from rewards.config import RewardConfig
from rewards.scoring import RewardScorer
from skinr1.taxonomy import LabelResolver, Taxonomy


# Scoring is idempotent, so a restarted actor may safely re-run the batch it was given.
@ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)
class RewardActor:
    """Scores batches of reward records under one config; caches warm up across calls."""

    def __init__(self, config: RewardConfig | dict | None = None, resolver: LabelResolver | Taxonomy | None = None):
        if isinstance(config, dict):
            config = RewardConfig.from_dict(config)
        self._scorer = RewardScorer(config, resolver)

    def score(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._scorer.score_records(samples)

    def config(self) -> dict[str, Any]:
        return self._scorer.config.to_dict()


class RewardPool:
    """Several `RewardActor`s; batches go to them round-robin."""

    def __init__(
        self,
        num_actors: int = 2,
        config: RewardConfig | None = None,
        resolver: LabelResolver | Taxonomy | None = None,
        num_cpus_per_actor: float = 1.0,
        placement_group: Any = None,
    ):
        if num_actors < 1:
            raise ValueError("num_actors must be >= 1")
        # Put the (possibly large) taxonomy in the object store once rather than once per actor.
        # Held for the pool's lifetime: a restarted actor re-reads its constructor arguments.
        self._resolver_ref = ray.put(resolver) if resolver is not None else None
        self.actors = []
        for index in range(num_actors):
            options: dict[str, Any] = {"num_cpus": num_cpus_per_actor}
            if placement_group is not None:  # one bundle per actor
                from skinr1.placement import strategy

                options["scheduling_strategy"] = strategy(placement_group, index)
            self.actors.append(RewardActor.options(**options).remote(config, self._resolver_ref))
        self._next = itertools.cycle(range(num_actors))

    def submit(self, samples: Sequence[dict[str, Any]], batch_size: int | None = None) -> list[ray.ObjectRef]:
        """Split `samples` into batches (default: one per actor), send them out, return their refs."""
        samples = list(samples)
        if not samples:
            return []
        size = batch_size or -(-len(samples) // len(self.actors))
        return [
            self.actors[next(self._next)].score.remote(samples[start : start + size])
            for start in range(0, len(samples), size)
        ]

    @staticmethod
    def gather(refs: Sequence[ray.ObjectRef], timeout: float | None = None) -> list[dict[str, Any]]:
        """The results of `submit`'s refs, flattened in submission order.

        Raises `ray.exceptions.GetTimeoutError` (a TimeoutError) when they are not all ready in time.
        """
        return [result for batch in ray.get(list(refs), timeout=timeout) for result in batch]

    def score(self, samples: Sequence[dict[str, Any]], timeout: float | None = None) -> list[dict[str, Any]]:
        return self.gather(self.submit(samples), timeout)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
