"""Weight sync from the learner group to the rollout pool: versioned, timed, pluggable backends.

Backends:
- `object_store` (one node or many): LoRA pushes only the adapter files (a new `LoRARequest` per
  version on every rollout actor); full fine-tuning, or LoRA merged on the learner, pushes
  (name, tensor) buckets, one remote call per bucket rather than one per parameter; LoRA merged on
  the rollout actors pushes the adapter's factors (and the base weights once per run).
- `shared_memory` (one node): learner rank 0 writes the version once into `/dev/shm` (the adapter
  directory, or one safetensors file per bucket) and the actors read it in place; only the path
  travels, nothing is copied per actor.
A backend is a class with `push(version) -> dict` registered in `SYNC_BACKENDS`; NCCL broadcast
between GPUs plugs in the same way (vLLM's weight-transfer engine) and is not part of the CPU build."""

from __future__ import annotations

import time
from typing import Any, Iterable

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024


def weight_group(name: str) -> str:
    """The unit a bucket must not split: the name up to its first numeric part (one decoder layer
    or vision block), else the module path.

    vLLM fuses some checkpoint tensors into one kernel tensor (q/k/v -> qkv_proj, gate/up ->
    gate_up_proj, experts -> one MoE layer), all inside one numbered block. Its in-place reload
    processes a layer once per call: a layer whose tensors arrive in two calls is rebuilt from the
    first part alone, and the engine's outputs turn to garbage.
    """
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return ".".join(parts[:-1]) or name


def bucket_named_tensors(named: Iterable[tuple[str, Any]], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[tuple[str, Any]]]:
    """Group (name, tensor) pairs into lists of about `bucket_bytes` each, in order, never splitting
    a `weight_group` (a group larger than a bucket gets a bucket of its own; no tensor is split)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    groups: dict[str, list[tuple[str, Any]]] = {}
    for name, tensor in named:
        groups.setdefault(weight_group(name), []).append((name, tensor))
    buckets: list[list[tuple[str, Any]]] = []
    current: list[tuple[str, Any]] = []
    size = 0
    for members in groups.values():
        nbytes = sum(tensor.numel() * tensor.element_size() for _, tensor in members)
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.extend(members)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def sync_report(version: int, started: float, exported: float, payload_bytes: int, reports: list) -> dict[str, Any]:
    """What every backend's `push` returns: version, export/push/total seconds, bytes, actors reached."""
    done = time.perf_counter()
    return {
        "version": version,
        "export_s": exported - started,
        "push_s": done - exported,
        "total_s": done - started,
        "bytes": payload_bytes,
        "actors": len(reports),
    }


class ObjectStoreSync:
    """Adapter files (LoRA) or weight buckets (full) through Ray's object store."""

    def __init__(self, learners, pool, adapters: bool, run_key: str = "", bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 merge_on_rollout: bool = False):
        self.learners = learners
        self.pool = pool
        self.adapters = adapters
        self.bucket_bytes = bucket_bytes
        self.merge_on_rollout = merge_on_rollout and not adapters
        self.base = None
        """The object-store reference of the base weights (merge_on_rollout), sent at the first push."""

    def push(self, version: int) -> dict[str, Any]:
        started = time.perf_counter()
        if self.adapters:
            files = self.learners.export_policy()
            exported = time.perf_counter()
            reports = self.pool.push_adapter(version, files)
            payload = sum(len(v) for v in files.values())
        elif self.merge_on_rollout:
            published = self.learners.publish_lora_factors(with_base=self.base is None)
            self.base = published["base"] or self.base
            exported = time.perf_counter()
            reports = self.pool.push_lora_factors(version, published["factors"], self.base, self.bucket_bytes)
            payload = published["bytes"]
        else:
            published = self.learners.publish_weight_buckets(self.bucket_bytes)
            exported = time.perf_counter()
            reports = self.pool.push_weights(version, published["buckets"])
            payload = published["bytes"]
        return sync_report(version, started, exported, payload, reports)

    def close(self) -> None:
        """Nothing outlives the actors: the object store frees the refs."""


class SharedMemorySync:
    """Policy versions in the node's shared memory; rollout actors on that node load them in place."""

    def __init__(self, learners, pool, adapters: bool, run_key: str = "", bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 merge_on_rollout: bool = False):
        # merge_on_rollout changes nothing here: the merged weights are written once, read in place.
        from learner.shared_store import store_name

        self.learners = learners
        self.pool = pool
        self.store = store_name(run_key)
        self.bucket_bytes = bucket_bytes

    def push(self, version: int) -> dict[str, Any]:
        started = time.perf_counter()
        shared = self.learners.export_to_shared_memory(version, self.store, self.bucket_bytes)
        exported = time.perf_counter()
        reports = self.pool.push_shared(version, shared)
        return sync_report(version, started, exported, shared["bytes"], reports)

    def close(self) -> None:
        self.learners.clear_shared_memory()


SYNC_BACKENDS = {"object_store": ObjectStoreSync, "shared_memory": SharedMemorySync}


def make_sync(name: str, learners, pool, adapters: bool, run_key: str = "", bucket_bytes: int = DEFAULT_BUCKET_BYTES,
              merge_on_rollout: bool = False):
    """The named backend. `adapters`: send LoRA adapter files (else full weights); `run_key` (the run
    directory) names the shared-memory store; `bucket_bytes` sizes full-weight buckets (one reload
    call per bucket); `merge_on_rollout` (LoRA, full-weight engines): the rollout actors merge the
    adapter's factors into their copy of the base (`GRPOConfig.merges_on_rollout`)."""
    if name not in SYNC_BACKENDS:
        raise ValueError(f"unknown sync backend {name!r}; expected one of {sorted(SYNC_BACKENDS)}")
    return SYNC_BACKENDS[name](learners, pool, adapters, run_key=run_key, bucket_bytes=bucket_bytes,
                               merge_on_rollout=merge_on_rollout)
