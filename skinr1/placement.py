"""Placement groups for the RL job's three roles: rollout actors, learner ranks, reward actors.

Reserving each role's resources as a placement group makes the job start all-or-nothing per role
(no learner rank waiting forever for a GPU a rollout engine took) and lets the rollout pool ask
"is there room for one more actor?" without blocking: a group that cannot be placed within a short
wait is removed again. The bundle arithmetic is pure so it can be tested without a cluster.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger(__name__)


def rollout_bundles(num_cpus: float, num_gpus: float, custom: Mapping[str, float], tensor_parallel_size: int) -> list[dict[str, float]]:
    """Bundles of one rollout actor.

    One engine GPU (tensor_parallel_size 1): a single bundle holds the actor and its GPU. A sharded
    engine (tensor_parallel_size > 1): bundle 0 holds the actor (CPU only) and one GPU bundle per
    shard follows, because vLLM's Ray executor places one worker on every GPU bundle of the actor's
    placement group.
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    head = {"CPU": float(num_cpus), **{k: float(v) for k, v in custom.items()}}
    if tensor_parallel_size == 1:
        if num_gpus:
            head["GPU"] = float(num_gpus)
        return [_drop_zeros(head)]
    return [_drop_zeros(head)] + [{"GPU": 1.0} for _ in range(tensor_parallel_size)]


def uniform_bundles(count: int, num_cpus: float, num_gpus: float = 0.0, custom: Mapping[str, float] | None = None) -> list[dict[str, float]]:
    """`count` identical bundles (learner ranks, reward actors)."""
    extra = {k: float(v) for k, v in (custom or {}).items()}
    return [_drop_zeros({"CPU": float(num_cpus), "GPU": float(num_gpus), **extra}) for _ in range(count)]


def _drop_zeros(bundle: dict[str, float]) -> dict[str, float]:
    # Ray rejects bundles that are entirely empty; zero entries carry no meaning either.
    kept = {k: v for k, v in bundle.items() if v > 0}
    return kept or {"CPU": 0.001}


def fits(bundles: list[dict[str, float]], available: Mapping[str, float]) -> bool:
    """Whether the summed bundles fit in the cluster's free resources (a cheap pre-check only:
    free resources are summed over nodes, so the placement itself still decides)."""
    needed: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            needed[key] = needed.get(key, 0.0) + value
    return all(available.get(key, 0.0) + 1e-9 >= value for key, value in needed.items())


def reserve(bundles: list[dict[str, float]], strategy: str, timeout_s: float | None, name: str = "") -> Any | None:
    """Create a placement group and wait for it; None (and nothing left reserved) if it does not
    fit within `timeout_s` (None waits forever)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy=strategy, name=name)
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if ready:
        return group
    remove_placement_group(group)
    log.info("placement group %s %s did not fit within %s s", name, bundles, timeout_s)
    return None


def release(group: Any | None) -> None:
    """Remove a placement group, tolerating one that is already gone."""
    if group is None:
        return
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(group)
    except Exception as error:  # its node may be dead; nothing is left to free
        log.debug("removing placement group: %s", error)


def strategy(group: Any, bundle_index: int = 0, capture_children: bool = False):
    """A scheduling strategy that puts an actor on `bundle_index` of `group`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=bundle_index, placement_group_capture_child_tasks=capture_children
    )
