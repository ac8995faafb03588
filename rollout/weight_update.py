"""Full-weight updates of a running vLLM engine (full fine-tuning, or a LoRA adapter merged on the
learner: `rl.lora_sync=merged`), bucket by bucket.

`WeightUpdateExtension` is installed into vLLM's workers (`worker_extension_cls`); each call hands
one bucket of (name, tensor) pairs to the worker's `reload_weights`, vLLM's public in-place reload:
as a safetensors file when the worker runs in a process of its own, as the tensors themselves when
it runs in the caller's (an in-process engine core, `rl.rollout.engine_core`).
(Calling `load_weights` after start-up, or naming the method `update_weights`, which collides with
vLLM's own, does not work.)
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

EXTENSION = "rollout.weight_update.WeightUpdateExtension"
SHARED_MEMORY = Path("/dev/shm")
"""Where a rollout actor stages weight buckets for its engine's processes (RAM-backed on Linux)."""


def shared_memory_available(root: Path = SHARED_MEMORY) -> bool:
    return root.is_dir() and os.access(root, os.W_OK)


PARTIAL_RELOAD_MESSAGES = ("Failed to load weights", "Following weights were not loaded")
"""vLLM's warnings for layers a reload call did not cover: every bucket but a whole-model one."""
RELOAD_LOGGERS = ("vllm.model_executor.model_loader.reload.layerwise", "vllm.model_executor.model_loader.reload.inplace")


NOT_LOADED_MESSAGE = "Following weights were not loaded"


class _PartialReloadFilter(logging.Filter):
    """Silences the partial-reload warnings, keeping the names each call did not load."""

    def __init__(self) -> None:
        super().__init__()
        self.not_loaded: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if NOT_LOADED_MESSAGE in message and record.args:
            names = record.args[0] if isinstance(record.args, tuple) else record.args
            self.not_loaded.update(str(name) for name in names)
        return not any(partial in message for partial in PARTIAL_RELOAD_MESSAGES)


class WeightsNotLoadedError(RuntimeError):
    """A sync left engine weights that no bucket carried: the engine would serve a mixed policy."""


class WeightUpdateExtension:
    """Mixed into vLLM's worker class; `self` is the worker.

    Each call reloads one bucket; the buckets never split a layer (see
    `learner.weight_sync.weight_group`), and the layers a bucket leaves out keep their weights.
    """

    def skinr1_reload_file(self, path: str) -> int:
        """Reload from one safetensors bucket file in shared memory: only the path crosses the RPC."""
        from safetensors.torch import load_file

        return self._reload_bucket(list(load_file(path).items()))

    def skinr1_reload_tensors(self, tensors: list[tuple[str, Any]]) -> int:
        """Reload from (name, tensor) pairs handed over in this process: no staging, no copy on the way."""
        return self._reload_bucket(list(tensors))

    def skinr1_begin_sync(self) -> None:
        """Start counting which engine weights this sync's buckets leave untouched."""
        self.skinr1_not_loaded = None

    def skinr1_end_sync(self) -> list[str]:
        """Engine weights that no bucket of this sync loaded (empty when the sync was whole)."""
        missing = sorted(getattr(self, "skinr1_not_loaded", None) or ())
        self.skinr1_not_loaded = None
        return missing

    def _reload_bucket(self, tensors: list[tuple[str, Any]]) -> int:
        quiet = _PartialReloadFilter()
        loggers = [logging.getLogger(name) for name in RELOAD_LOGGERS]
        for logger in loggers:
            logger.addFilter(quiet)
        try:
            self.reload_weights(weights_iterator=iter(tensors))
        finally:
            for logger in loggers:
                logger.removeFilter(quiet)
        # A weight is missing from the sync only if every bucket left it out.
        previous = getattr(self, "skinr1_not_loaded", None)
        self.skinr1_not_loaded = quiet.not_loaded if previous is None else previous & quiet.not_loaded
        return len(tensors)


def write_weight_buckets(directory: Path, buckets: list[list[tuple[str, Any]]]) -> list[str]:
    """One safetensors file per bucket, in order; returns the file names (in load order)."""
    from safetensors.torch import save_file

    paths = []
    for index, bucket in enumerate(buckets):
        path = directory / f"bucket-{index:05d}.safetensors"
        save_file({name: tensor.contiguous() for name, tensor in bucket}, str(path))
        paths.append(path.name)
    return paths


def apply_weight_buckets(llm, buckets: list[list[tuple[str, Any]]]) -> int:
    """Push every bucket to every worker of `llm` (one RPC per bucket); returns tensors loaded.

    A worker in this process (`workers_in_this_process`) gets each bucket's tensors as they are.
    Workers in processes of their own on this node get each bucket as a safetensors file staged in
    the node's shared memory (or its temp directory where there is none), and only the path crosses
    the RPC. Bytes sent through vLLM's RPC serializer were copied several times more: at the medium
    size of `benchmarks/bench_vs_trl.py` a push took 3.0-3.3 s that way and 1.6-2.4 s with files
    (README, Benchmarks).
    """
    if workers_in_this_process(llm):
        llm.collective_rpc("skinr1_begin_sync")
        total = sum(llm.collective_rpc("skinr1_reload_tensors", args=(bucket,))[0] for bucket in buckets)
        _finish_sync(llm)
        return total
    root = SHARED_MEMORY if shared_memory_available() else None
    with tempfile.TemporaryDirectory(prefix="skinr1-reload-", dir=root) as staging:
        names = write_weight_buckets(Path(staging), buckets)
        return apply_weight_files(llm, [str(Path(staging) / name) for name in names])


def workers_in_this_process(llm) -> bool:
    """Whether `llm`'s engine core and its one worker run in this process (vLLM's in-process engine
    core, VLLM_ENABLE_V1_MULTIPROCESSING=0, with a single-process executor): a collective RPC is
    then a plain call, and tensors passed to it are not copied."""
    from vllm.v1.engine.core_client import InprocClient
    from vllm.v1.executor.uniproc_executor import UniProcExecutor

    client = llm.llm_engine.engine_core
    return isinstance(client, InprocClient) and isinstance(client.engine_core.model_executor, UniProcExecutor)


def apply_weight_files(llm, paths: list[str]) -> int:
    """Reload every bucket file on every worker of `llm` (one RPC per file); returns tensors loaded."""
    llm.collective_rpc("skinr1_begin_sync")
    total = sum(llm.collective_rpc("skinr1_reload_file", args=(path,))[0] for path in paths)
    _finish_sync(llm)
    return total


def apply_checkpoint(llm, model_dir: str | Path) -> int:
    """Reload every weight of `llm` from a checkpoint directory's safetensors files (same model
    config as the engine's). A single file is handed over as it is; the shards of a larger
    checkpoint may split a layer between them, so their tensors are regrouped into layer-whole
    buckets first. Returns tensors loaded; raises WeightsNotLoadedError if the checkpoint lacks any."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {model_dir}")
    if len(files) == 1:
        return apply_weight_files(llm, [str(files[0])])
    return apply_weight_buckets(llm, layer_whole_buckets(files))


def layer_whole_buckets(files: list[Path], bucket_bytes: int | None = None) -> list[list[tuple[str, Any]]]:
    """The tensors of a sharded checkpoint regrouped so that no bucket splits a layer (a shard
    boundary may fall between a layer's q and k projections); buckets of about `bucket_bytes`
    (default: the weight sync's)."""
    from safetensors.torch import load_file

    from learner.weight_sync import DEFAULT_BUCKET_BYTES, bucket_named_tensors

    named = (item for path in files for item in load_file(path).items())
    return bucket_named_tensors(named, bucket_bytes or DEFAULT_BUCKET_BYTES)


def _finish_sync(llm) -> None:
    """Raise WeightsNotLoadedError when a worker kept weights the sync did not carry."""
    missing = sorted({name for names in llm.collective_rpc("skinr1_end_sync") for name in names})
    _forget_old_weights(llm)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise WeightsNotLoadedError(f"the weight sync carried no value for {len(missing)} engine weights: {shown}")


def _forget_old_weights(llm) -> None:
    # Caches computed with the old weights: KV blocks, and image encodings (the workers dropped
    # theirs in reload_weights; the front end must forget them too or it reports a cache miss).
    llm.reset_prefix_cache()
    llm.llm_engine.reset_encoder_cache()  # the scheduler's bookkeeping and the workers' storage
    llm.reset_mm_cache()
