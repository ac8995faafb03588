"""Pure building blocks of `skinr1 data build`: linking records, picking duplicates, splitting groups.

Nothing here reads files or knows about Records: inputs are plain keys, labels and numbers, so
every rule (which copy of a duplicate is kept, which split a patient lands in, what counts as a
leak) is a deterministic function with its own unit tests (tests/test_data_build.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

SPLITS = ("train", "valid", "test")
# When a group's members demand different official splits, the most held-out one wins (an
# official test set stays intact; the clashing training copies are dropped and counted).
HELD_OUT_ORDER = ("test", "valid", "train")


def connected_components(keys_per_item: Sequence[Iterable[Hashable]]) -> list[int]:
    """Component number per item: items sharing any key (directly or through others) share one.

    Numbers are the index of the component's first item, so they are stable for a given order.
    """
    parent = list(range(len(keys_per_item)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    owner: dict[Hashable, int] = {}
    for item, keys in enumerate(keys_per_item):
        for key in keys:
            other = owner.setdefault(key, item)
            if other != item:
                a, b = root(item), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(len(keys_per_item))]


@dataclass(frozen=True)
class Copy:
    """One copy of a (possibly duplicated) image, as far as choosing the kept copy is concerned."""

    depth: int
    """Taxonomy depth of its label: the deepest (finest) label wins."""
    priority: int
    """Position of its dataset in the recipe: on equal depth the earlier dataset wins."""
    record_id: str
    """Last tie-break, so the choice never depends on input order."""


def choose_kept(copies: Sequence[Copy]) -> int:
    """Index of the copy to keep: finest label, then recipe order, then smallest record id."""
    if not copies:
        raise ValueError("choose_kept needs at least one copy")
    return min(range(len(copies)), key=lambda i: (-copies[i].depth, copies[i].priority, copies[i].record_id))


def allowed_splits(official: str | None, carve_valid: bool = True) -> frozenset[str]:
    """Splits a record may end in: anything when the source has no split (None), else its official
    split - where an official train split may also give up records to valid when `carve_valid`
    (the source ships no valid split of its own)."""
    if official is None:
        return frozenset(SPLITS)
    if official == "train":
        return frozenset(("train", "valid")) if carve_valid else frozenset(("train",))
    if official in SPLITS:
        return frozenset((official,))
    raise ValueError(f"unknown split {official!r}; expected one of {SPLITS} or None")


def settle_group(member_splits: Sequence[frozenset[str]]) -> tuple[frozenset[str], list[int]]:
    """The splits a whole group may go to, and the members that must be dropped for it.

    Normally the intersection of the members' allowed splits. When that is empty (an official
    split put one lesion in train and test), the most held-out split any member demands wins and
    the members that cannot follow it are returned for dropping.
    """
    common = frozenset(SPLITS)
    for allowed in member_splits:
        common &= allowed
    if common:
        return common, []
    demanded = {split for allowed in member_splits if len(allowed) == 1 for split in allowed}
    winner = next(split for split in HELD_OUT_ORDER if split in demanded)
    return frozenset((winner,)), [i for i, allowed in enumerate(member_splits) if winner not in allowed]


@dataclass(frozen=True)
class Group:
    """A set of records that must stay together (one patient, lesion or duplicated image)."""

    key: str
    """Stable identity (e.g. the smallest record id): orders groups independently of input order."""
    labels: tuple[str, ...]
    """One stratification label per record of the group."""


def stable_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): a shuffle that no input reordering changes."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stratified_group_split(groups: Sequence[Group], fractions: Mapping[str, float], seed: int) -> list[str]:
    """Assign whole groups to splits so that each label's records follow `fractions` approximately.

    Greedy: groups are taken largest first (seeded order among equals) and each goes to the split
    furthest below its target for the group's labels (label deficits as shares of each label's
    total, then the split's overall size deficit, then `fractions` order). Deterministic for a
    seed and independent of the order of `groups`.
    """
    names = [name for name, share in fractions.items() if share > 0]
    if not names:
        raise ValueError(f"fractions need at least one positive share, got {dict(fractions)}")
    total_share = sum(fractions[name] for name in names)
    share = {name: fractions[name] / total_share for name in names}
    totals: Counter = Counter(label for group in groups for label in group.labels)
    size_total = sum(totals.values()) or 1
    placed: dict[str, Counter] = {name: Counter() for name in names}
    sizes: dict[str, int] = defaultdict(int)
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i].labels), stable_unit(seed, groups[i].key), groups[i].key))
    result = [""] * len(groups)
    for index in order:
        counts = Counter(groups[index].labels)

        def need(name: str) -> tuple[float, float, int]:
            label_need = sum(n * (share[name] * totals[label] - placed[name][label]) / totals[label]
                             for label, n in counts.items())
            return label_need, (share[name] * size_total - sizes[name]) / size_total, -names.index(name)

        best = max(names, key=need)
        result[index] = best
        placed[best].update(counts)
        sizes[best] += len(groups[index].labels)
    return result


def shared_keys(partition_keys: Iterable[tuple[str, Iterable[str]]]) -> dict[str, set[str]]:
    """Keys found in more than one partition, each with the partitions holding it.

    `partition_keys` yields (partition, keys of one record); used after a build to prove that no
    image hash, ISIC id or patient/lesion key crosses splits.
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for partition, keys in partition_keys:
        for key in keys:
            seen[key].add(partition)
    return {key: partitions for key, partitions in seen.items() if len(partitions) > 1}
