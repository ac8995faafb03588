"""Weight sync from the learner group to the rollout pool: versioned, timed, pluggable backends.

Backends:
- `object_store` (one node or many): LoRA pushes only the adapter files (a new `LoRARequest` per
  version on every rollout actor); full fine-tuning pushes (name, tensor) buckets, one remote call
  per bucket rather than one per parameter.
A backend is a class with `push(version) -> dict` registered in `SYNC_BACKENDS`; NCCL broadcast
between GPUs plugs in the same way (vLLM's weight-transfer engine) and is not part of the CPU build.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024


def bucket_named_tensors(named: Iterable[tuple[str, Any]], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[tuple[str, Any]]]:
    """Group (name, tensor) pairs into lists of about `bucket_bytes` each, in order.

    A tensor larger than a bucket gets a bucket of its own; no tensor is split.
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    buckets: list[list[tuple[str, Any]]] = []
    current: list[tuple[str, Any]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append((name, tensor))
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


class ObjectStoreSync:
    """Adapter files (LoRA) or weight buckets (full) through Ray's object store."""

    def __init__(self, learners, pool, lora: bool, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        self.learners = learners
        self.pool = pool
        self.lora = lora
        self.bucket_bytes = bucket_bytes

    def push(self, version: int) -> dict[str, Any]:
        started = time.perf_counter()
        if self.lora:
            files = self.learners.export_policy()
            exported = time.perf_counter()
            reports = self.pool.push_adapter(version, files)
            payload = sum(len(v) for v in files.values())
        else:
            buckets = self.learners.export_weight_buckets(self.bucket_bytes)
            exported = time.perf_counter()
            reports = self.pool.push_weights(version, buckets)
            payload = sum(t.numel() * t.element_size() for bucket in buckets for _, t in bucket)
        done = time.perf_counter()
        return {
            "version": version,
            "export_s": exported - started,
            "push_s": done - exported,
            "total_s": done - started,
            "bytes": payload,
            "actors": len(reports),
        }


SYNC_BACKENDS = {"object_store": ObjectStoreSync}


def make_sync(name: str, learners, pool, lora: bool):
    try:
        return SYNC_BACKENDS[name](learners, pool, lora)
    except KeyError:
        raise ValueError(f"unknown sync backend {name!r}; expected one of {sorted(SYNC_BACKENDS)}") from None
