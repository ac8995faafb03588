"""The rollout actor: a vLLM engine holding the current policy, as a thin Ray actor shell.

Weights change only between `generate` calls: a Ray actor runs one method at a time, so every
sample of a call carries the same `policy_version` — an actor never serves a mix of versions.
LoRA policies are synced as adapters (a new `LoRARequest` per version), as weights merged by the
learner, or as adapter factors the actor merges into its copy of the base weights; full
fine-tuning pushes weight buckets through vLLM's weight-update API.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rollout.engine import EngineSettings, build_llm
from rollout.sampling import (
    VISION_SPECIAL_TOKENS,
    RolloutRequest,
    RolloutResult,
    SamplingSettings,
    request_seed,
    to_samples,
    vllm_sampling_params,
)

KEEP_ADAPTER_VERSIONS = 2


class RolloutWorker:
    """vLLM engine + current policy version. Wrap with `ray.remote` (see rollout.pool)."""

    def __init__(self, name: str, model: str, settings: EngineSettings, initial_adapter: str | None = None):
        """`model` and `initial_adapter`: local paths, hub ids, or bucket URIs (a run_dir in a
        bucket), which are copied once to this node (storage.cached_model)."""
        from skinr1.storage import cached_model

        self.name = name
        self.settings = settings
        self.llm = build_llm(cached_model(model), settings)
        self.tokenizer = self.llm.get_tokenizer()
        self.blocked_token_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]
        self.version = 0
        self.lora_request = None
        # Made at the first adapter sync only: merged and full-weight syncs never stage files, and
        # an actor that is killed (not shut down) then leaves nothing behind in the temp directory.
        self._adapter_root: Path | None = None
        self._base: tuple[str, list] | None = None
        """(object id, weights) of the base that synced LoRA factors are merged into."""
        if initial_adapter is not None:
            self.use_adapter(0, cached_model(str(initial_adapter)))

    # ----------------------------------------------------------------- generation
    def generate(self, requests: list[RolloutRequest], sampling: SamplingSettings, seed: int | None = None, n: int | None = None) -> list[RolloutResult]:
        images = self.settings.images()
        prompts = [{"prompt": request.prompt, "multi_modal_data": {"image": images.load_image(request.image)}}
                   for request in requests]
        # Texts are decoded here, once per completion, not token by token in vLLM's client.
        params = [vllm_sampling_params(sampling, self.blocked_token_ids, request_seed(seed, request.prompt_id), n,
                                       detokenize=False)
                  for request in requests]
        outputs = self.llm.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        return [
            RolloutResult(
                prompt_id=request.prompt_id,
                prompt_token_ids=list(output.prompt_token_ids or []),
                samples=to_samples(output, self.tokenizer),
                policy_version=self.version,
                actor=self.name,
                metadata=request.metadata,
            )
            for request, output in zip(requests, outputs)
        ]

    # ----------------------------------------------------------------- weight sync
    @property
    def adapter_root(self) -> Path:
        """Where adapter versions sent as files are staged (one folder per actor)."""
        if self._adapter_root is None:
            self._adapter_root = Path(tempfile.mkdtemp(prefix=f"skinr1-{self.name}-adapters-"))
        return self._adapter_root

    def load_adapter(self, version: int, files: dict[str, bytes]) -> dict[str, Any]:
        """Install a LoRA adapter version from its files (adapter_config.json, adapter_model.safetensors)."""
        started = time.perf_counter()
        directory = self.adapter_root / f"v{version}"
        staging = self.adapter_root / f".v{version}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, payload in files.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"unexpected adapter file name {name!r}")
            (staging / name).write_bytes(payload)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        self.use_adapter(version, str(directory))
        self._prune_adapters()
        return {"actor": self.name, "version": version, "seconds": time.perf_counter() - started}

    def use_adapter(self, version: int, directory: str | None) -> None:
        """Serve the adapter in `directory` as policy `version` (None: the bare base model)."""
        from vllm.lora.request import LoRARequest

        # lora_int_id must be unique and > 0 per adapter; the version makes it so.
        self.lora_request = LoRARequest(f"policy-v{version}", version + 1, directory) if directory else None
        self.version = version

    def _prune_adapters(self) -> None:
        versions = sorted(int(p.name[1:]) for p in self.adapter_root.glob("v*") if p.name[1:].isdigit())
        for old in versions[:-KEEP_ADAPTER_VERSIONS]:
            shutil.rmtree(self.adapter_root / f"v{old}", ignore_errors=True)

    def use_shared_policy(self, version: int, shared: dict[str, Any]) -> dict[str, Any]:
        """Serve a version published in this node's shared memory (see learner.shared_store): the
        adapter directory in place (LoRA), or the engine's weights reloaded from its bucket files."""
        import ray

        started = time.perf_counter()
        here = ray.get_runtime_context().get_node_id()
        if shared["node_id"] != here:
            raise RuntimeError(
                f"rollout actor {self.name} (node {here[:8]}) cannot read the learner's shared memory on node "
                f"{shared['node_id'][:8]}: rl.sync_backend=shared_memory needs every rollout actor on the learner "
                "rank 0's node; use rl.sync_backend=object_store across nodes"
            )
        if not Path(shared["directory"]).is_dir():
            raise RuntimeError(f"policy version {version} is no longer in shared memory ({shared['directory']})")
        if shared["files"]:
            from rollout.weight_update import apply_weight_files

            apply_weight_files(self.llm, [str(Path(shared["directory"]) / name) for name in shared["files"]])
            self.version = version
        else:
            self.use_adapter(version, shared["directory"])
        return {"actor": self.name, "version": version, "seconds": time.perf_counter() - started}

    def load_weights(self, version: int, buckets: list[list[tuple[str, Any]]]) -> dict[str, Any]:
        """Full fine-tuning: replace the engine's weights from (name, tensor) buckets."""
        started = time.perf_counter()
        from rollout.weight_update import apply_weight_buckets

        return self._reloaded(version, apply_weight_buckets(self.llm, buckets), started)

    def merge_lora(self, version: int, factors: dict[str, tuple], base: list, bucket_bytes: int) -> dict[str, Any]:
        """LoRA merged here: `factors` (`learner.lora.lora_factors`) added to the base weights, and
        the engine reloaded with the result, bucket by bucket. `base`: [ObjectRef] of the learner's
        unmerged weights, fetched at this actor's first merge (or when the learner sends another) and kept."""
        import ray

        from learner.lora import merge_lora_factors
        from learner.weight_sync import bucket_named_tensors
        from rollout.weight_update import apply_weight_buckets

        started = time.perf_counter()
        [ref] = base
        if self._base is None or self._base[0] != ref.hex():
            self._base = (ref.hex(), ray.get(ref))
        merged = merge_lora_factors(self._base[1], factors)
        return self._reloaded(version, apply_weight_buckets(self.llm, bucket_named_tensors(merged, bucket_bytes)), started)

    def load_checkpoint(self, version: int, model_dir: str) -> dict[str, Any]:
        """Serve another full-weight checkpoint of the engine's architecture (evaluation of several
        checkpoints on one engine): its weights reloaded in place."""
        started = time.perf_counter()
        from rollout.weight_update import apply_checkpoint

        return self._reloaded(version, apply_checkpoint(self.llm, model_dir), started)

    def _reloaded(self, version: int, tensors: int, started: float) -> dict[str, Any]:
        """Serve `version` from now on; the report of its full-weight reload."""
        self.version = version
        return {"actor": self.name, "version": version, "tensors": tensors, "seconds": time.perf_counter() - started}

    # ----------------------------------------------------------------- health
    def info(self) -> dict[str, Any]:
        """Name, served policy version, pid, and whether the engine's worker runs in this process
        (full-weight syncs then hand it tensors instead of staged files)."""
        from rollout.weight_update import workers_in_this_process

        return {"name": self.name, "version": self.version, "pid": os.getpid(),
                "engine_in_process": workers_in_this_process(self.llm)}

    def shutdown(self) -> None:
        """Stop the engine's processes now, not whenever the garbage collector reaches them (the
        next engine of an evaluation would start beside them), and remove the staged adapters."""
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        if self._adapter_root is not None:
            shutil.rmtree(self._adapter_root, ignore_errors=True)
