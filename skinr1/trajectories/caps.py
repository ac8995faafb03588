"""Caps on how many trajectories are written: per (diagnosis, type) and per type.

The paper's generator writes at most 5 trajectories per diagnosis and type and 1,000 per type.
The caps are applied to the plans before anything is written, so a capped record costs no teacher
request; trajectories that then fail verification are not replaced (the caps bound the set, they
do not fill it). Which records stay is decided by a seeded hash of the record id, not by manifest
order: manifests are often sorted by source, and "the first five" would all come from one dataset.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

CAPPED_PER_DIAGNOSIS_TYPE = "capped_per_diagnosis_type"
CAPPED_PER_TYPE = "capped_per_type"


def cap_reasons(
    keys: Sequence[tuple[str, str]], order: Sequence[float], per_diagnosis_type: int, per_type: int
) -> list[str | None]:
    """For each (trajectory type, diagnosis) key: None when kept, else the reason it is capped.

    Keys are admitted in increasing `order` (ties: input order) while both counts are under their
    cap; a cap of 0 means none. A key refused by the per-diagnosis cap does not use up the per-type
    budget, so the per-type cap counts only trajectories that are written.
    """
    if len(keys) != len(order):
        raise ValueError(f"{len(keys)} keys but {len(order)} order values")
    if per_diagnosis_type < 0 or per_type < 0:
        raise ValueError("caps must be >= 0 (0 = no cap)")
    reasons: list[str | None] = [None] * len(keys)
    per_key: Counter = Counter()
    per_kind: Counter = Counter()
    for i in sorted(range(len(keys)), key=lambda i: (order[i], i)):
        kind = keys[i][0]
        if per_diagnosis_type and per_key[keys[i]] >= per_diagnosis_type:
            reasons[i] = CAPPED_PER_DIAGNOSIS_TYPE
        elif per_type and per_kind[kind] >= per_type:
            reasons[i] = CAPPED_PER_TYPE
        else:
            per_key[keys[i]] += 1
            per_kind[kind] += 1
    return reasons
