"""Per-record plan: trajectory type and differential, derived from a seeded hash of the record id.

Hashing the record id (rather than drawing from one stream in file order) keeps each record's
plan stable when the manifest is re-ordered, filtered, extended or split across Ray tasks.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from skinr1.trajectories.ddx import SOURCE_NONE, SOURCE_RANDOM
from skinr1.trajectories.kinds import DDX_TYPES, RANDOM_DDX_TYPES, TRAJECTORY_TYPES


@dataclass(frozen=True)
class Plan:
    trajectory_type: str
    differential: str | None
    ddx_source: str
    """Where the differential came from: the source of the node's DDx neighbours (knowledge_base /
    taxonomy_ddx / taxonomy_siblings / none), or "random" for a random-DDx differential."""
    assigned_type: str
    """The type the hash picked; differs from `trajectory_type` only when no differential was
    available (no DDx neighbour, or for the random-DDx types no disease outside the neighbourhood)."""


def _digest(seed: int, record_id: str, purpose: str) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{purpose}\x1f{record_id}".encode()).digest()


def stable_unit(seed: int, record_id: str, purpose: str) -> float:
    """A number in [0, 1) fixed by (seed, record id, purpose)."""
    return int.from_bytes(_digest(seed, record_id, purpose)[:8], "big") / 2**64


def seeded_rng(seed: int, record_id: str, purpose: str) -> random.Random:
    """A private RNG per record and purpose (Python's hash() is salted per process, so not that)."""
    return random.Random(int.from_bytes(_digest(seed, record_id, purpose)[:8], "big"))


def assign_type(unit: float, proportions: Mapping[str, float]) -> str:
    """Type whose cumulative share interval contains `unit` (shares normalised, zero shares skipped)."""
    total = sum(proportions.get(t, 0.0) for t in TRAJECTORY_TYPES)
    if total <= 0:
        raise ValueError("trajectory type proportions must not all be 0")
    cumulative = 0.0
    chosen = None
    for kind in TRAJECTORY_TYPES:
        share = proportions.get(kind, 0.0) / total
        if share <= 0:
            continue
        chosen = kind
        cumulative += share
        if unit < cumulative:
            return kind
    return chosen  # float rounding at the very top of the interval


def choose_differential(candidates: Sequence[str], preferred: Collection[str], rng: random.Random) -> str | None:
    """One of `candidates` (DDx neighbours, or the random-DDx pool), preferring ones the knowledge
    base describes (the writers can say why they differ)."""
    pool = [n for n in candidates if n in preferred] or list(candidates)
    return rng.choice(pool) if pool else None


def _no_pool(node_id: str) -> Sequence[str]:
    return ()


def plan_record(
    record_id: str,
    node_id: str,
    seed: int,
    proportions: Mapping[str, float],
    graph: Mapping[str, tuple[tuple[str, ...], str]],
    preferred: Collection[str],
    random_pool: Callable[[str], Sequence[str]] = _no_pool,
) -> Plan:
    """`random_pool(node_id)`: the diseases a random-DDx differential may be drawn from (see
    `ddx.outside_neighbourhood`); called only for those types, so the default path never builds it."""
    assigned = assign_type(stable_unit(seed, record_id, "type"), proportions)
    neighbours, source = graph.get(node_id, ((), SOURCE_NONE))
    if assigned in RANDOM_DDX_TYPES:
        # Its own purpose string, so the draw is independent of the DDx pick for the same record.
        pool, rng, where = random_pool(node_id), seeded_rng(seed, record_id, "random_differential"), SOURCE_RANDOM
    elif assigned in DDX_TYPES:
        pool, rng, where = neighbours, seeded_rng(seed, record_id, "differential"), source
    else:
        return Plan(assigned, None, source, assigned)
    differential = choose_differential(pool, preferred, rng)
    if differential is None:  # nothing to compare with: a direct trajectory, reported as a fallback
        return Plan("direct", None, source, assigned)
    return Plan(assigned, differential, where, assigned)
