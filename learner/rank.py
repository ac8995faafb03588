"""One GRPO learner rank: a DeepSpeed (or DDP) engine inside a Ray actor, in a torch.distributed group.

Policy set-up (`learner.policy_start.PolicyStart`): by default (LoRA) the SFT adapter is merged
into the base weights and a fresh adapter is trained on top, so "adapters disabled" is exactly the
SFT policy, the reference of the KL term. Full fine-tuning, and a run that continues SFT's adapter
on the bare base (rl.continue_sft_adapter), keep a frozen model as the reference (a copy of the
start, or the merged SFT weights), on the engine's device (or in host memory with
learner.offload_reference). The weights load in the run's dtype and
every batch is moved to the engine's device (`learner.devices`).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from learner.grpo import grpo_token_losses, mean_over_step
from learner.devices import module_device, require_accelerator, to_device
from learner.grpo_config import GRPOConfig
from learner.micro_batches import StepMicroBatches, encode_micro_batches, score_in_passes
from learner.policy_batch import PromptCache, TrainSample, encode_batch, token_logprobs, token_logprobs_and_entropy


def init_process_group(rank: int, world: int, address: str, port: int, use_gpu: bool) -> None:
    import torch.distributed as dist

    # DeepSpeed reads the launcher's variables; Ray gives each rank its own process (and, on GPUs,
    # one visible device), so the local rank is always 0.
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0",
                       "MASTER_ADDR": address, "MASTER_PORT": str(port)})
    if not dist.is_initialized():
        backend = "nccl" if use_gpu else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world)


class LearnerRank:
    """Wrap with `ray.remote` (see learner.group)."""

    def __init__(self, rank: int, world: int, start, config: GRPOConfig, seed: int, policy=None):
        """`start`: a `PolicyStart`, or the path of the model a fresh adapter (or full training) starts on."""
        from learner.policy_start import PolicyStart
        from skinr1.models.settings import PolicySettings

        self.rank, self.world, self.config = rank, world, config
        self.start, self.seed = PolicyStart.of(start), seed
        self.policy = policy or PolicySettings()
        """Dtype and pixel bounds (skinr1.config.derive.learner_settings); the default keeps the
        checkpoint's processor bounds and float32."""
        self._shared_store = None  # rank 0's versions in shared memory (sync_backend=shared_memory)

    def rendezvous(self) -> tuple[str, int]:
        """This rank's node address and a free port on it (rank 0 hosts the group's rendezvous:
        on a cluster the ranks sit on GPU nodes, not on the driver's node)."""
        import ray

        from learner.group import free_port

        address = ray.util.get_node_ip_address()
        return address, free_port(address)

    def setup(self, endpoint: tuple[str, int]) -> None:
        """Join the process group at rank 0's (address, port) and build the DeepSpeed engine (all
        ranks call this together)."""
        import warnings

        import torch

        # DeepSpeed's ZeRO gathers call a torch API that warns on every step; the log is for us.
        warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
        config, learner = self.config, self.config.learner
        require_accelerator(learner.use_gpu, f"learner rank {self.rank}")
        if learner.use_gpu:
            torch.cuda.set_device(0)  # Ray exposes one GPU per rank as device 0
        init_process_group(self.rank, self.world, *endpoint, learner.use_gpu)
        torch.manual_seed(self.seed)
        from skinr1.storage import cached_model

        start = self.start.map(cached_model)  # a bucket URI (a run_dir in a bucket): this node's copy
        self.processor = self.policy.load_processor(start.base)
        model = self.policy.load_policy(start.base)
        self.reference = None
        if start.adapter is not None and not learner.lora.enabled:
            raise ValueError("continuing an adapter needs rl.learner.lora.enabled")
        if learner.lora.enabled:
            from learner.lora import apply_lora, continue_lora

            model = continue_lora(model, start.adapter, learner.lora) if start.adapter else apply_lora(model, learner.lora)
        if start.reference is not None:
            self.reference = self.policy.load_policy(start.reference).eval().requires_grad_(False)
        elif not learner.lora.enabled:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        from learner.train_engine import TrainingEngine

        self.engine = TrainingEngine(
            model,
            "deepspeed",
            learner.deepspeed,
            learner.micro_batch_size,
            config.grad_accum_steps,
            self.world,
            learner.learning_rate,
            learner.weight_decay,
            total_steps=config.steps * learner.updates_per_step,
            warmup_steps=int(learner.warmup_ratio * config.steps * learner.updates_per_step),
            dtype=self.policy.dtype,
            use_gpu=learner.use_gpu,
        )
        if self.reference is not None and not learner.offload_reference:
            self.reference.to(self.engine.device)  # the frozen copy scores on the same device

    def encode(self, samples: list[TrainSample], prompts: PromptCache | None = None) -> dict[str, Any]:
        """One micro-batch's tensors, built on the CPU by the processor, on the engine's device
        (`prompts`: the step's processed prompts, shared by its micro-batches)."""
        return to_device(encode_batch(self.processor, samples, self.policy, prompts), self.engine.device)

    # ----------------------------------------------------------------- training
    def train_step(self, samples: list[TrainSample], step_size: float) -> dict[str, float]:
        """One rollout batch on this rank: `updates_per_step` optimizer updates.

        `step_size` is what the whole step's loss is averaged over, across all ranks: its completion
        tokens or its sequences (loss.aggregation; learner.grpo.step_denominator), so the loss is the
        step's token or sequence mean however it is split.
        With one update per step the weights that score the "old" log-probs are the weights being
        trained, so the training forward's own (detached) log-probs serve as old ones: the ratio is
        exactly 1 and a separate scoring pass would only cost time. More updates score first.
        """
        import torch

        started = time.perf_counter()
        config, learner, loss_cfg = self.config, self.config.learner, self.config.loss
        temperature = config.sampling.temperature
        step = self._micro_batches(samples)
        batches = step.encoded
        score_old = learner.updates_per_step > 1
        module = self.engine.module
        with torch.no_grad():  # log-probs before the update, and of the reference
            module.eval()
            unscored = [None] * len(batches)
            old = self._scored(lambda b: self._current_logprobs(b, temperature), step) if score_old else unscored
            ref = self._scored(lambda b: self._reference_logprobs(b, temperature), step) if loss_cfg.kl_beta > 0 else unscored
            for batch, old_logprobs, ref_logprobs in zip(batches, old, ref):
                batch["old_logprobs"], batch["ref_logprobs"] = old_logprobs, ref_logprobs
        module.train()
        sums = {"loss": 0.0, "policy": 0.0, "kl": 0.0, "clipped": 0.0, "ratio_gap": 0.0, "entropy": 0.0}
        # DeepSpeed averages gradients over ranks and divides by accumulation steps; undo both so
        # each update is the gradient of its token mean (updates_per_step splits the step's tokens).
        scale = self.world * config.grad_accum_steps * learner.updates_per_step
        per_update = len(batches) // learner.updates_per_step
        for update in range(learner.updates_per_step):
            for batch in batches[update * per_update : (update + 1) * per_update]:
                logprobs, entropy = token_logprobs_and_entropy(self.engine, batch, temperature)
                old_logprobs = batch["old_logprobs"] if score_old else logprobs.detach()
                parts = grpo_token_losses(
                    logprobs, old_logprobs, batch["ref_logprobs"], batch["rollout_logprobs"],
                    batch["advantages"], loss_cfg.clip_low, loss_cfg.clip_high, loss_cfg.kl_beta,
                    loss_cfg.kl_estimator, loss_cfg.tis_cap,
                )
                mask = batch["mask"]
                loss = mean_over_step(parts["total"], mask, step_size, loss_cfg.aggregation)
                self.engine.micro_step(loss * scale)
                with torch.no_grad():
                    sums["loss"] += float(loss)
                    for name in ("policy", "kl", "clipped"):
                        if name in parts:
                            sums[name] += float(mean_over_step(parts[name], mask, step_size, loss_cfg.aggregation))
                    gap = (old_logprobs - batch["rollout_logprobs"]).abs()
                    sums["ratio_gap"] += float(mean_over_step(gap, mask, step_size, loss_cfg.aggregation))
                    sums["entropy"] += float(mean_over_step(entropy, mask, step_size, loss_cfg.aggregation))
        return {**sums, "lr": self.engine.learning_rate, "seconds": time.perf_counter() - started}

    def _micro_batches(self, samples: list[TrainSample]) -> StepMicroBatches:
        """This rank's micro-batches of a step, encoded on the engine's device: rows of similar
        length together (learner.sort_by_length), each (prompt, image) processed once for the whole step."""
        learner = self.config.learner
        by_length = learner.sort_by_length and not (learner.lora.enabled and learner.lora.dropout > 0)
        step = encode_micro_batches(self.processor, samples, self.policy, learner.micro_batch_size,
                                    learner.updates_per_step, by_length)
        step.encoded = [to_device(batch, self.engine.device) for batch in step.encoded]
        return step

    def policy_logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """The current policy's log-prob of each completion token, at the sampling temperature
        (read-only; e.g. to check that rollout actors serve the learner's policy after a sync)."""
        import torch

        temperature = self.config.sampling.temperature
        micro = self.config.learner.micro_batch_size
        values: list[list[float]] = []
        prompts: PromptCache = {}
        self.engine.module.eval()
        with torch.no_grad():
            for start in range(0, len(samples), micro):
                chunk = samples[start : start + micro]
                batch = self.encode(chunk, prompts)
                logprobs = token_logprobs(self.engine, batch, temperature)
                for row, mask in zip(logprobs, batch["mask"]):
                    values.append(row[mask > 0].tolist())
        return values

    def _scored(self, score, step: StepMicroBatches) -> list:
        """`score` of each micro-batch of `step`, in no-grad passes of rl.learner.score_micro_batch_size."""
        passes = self.config.learner.micro_batches_per_score_pass
        return score_in_passes(score, step, self.processor, self.policy, passes)

    def _current_logprobs(self, batch: dict[str, Any], temperature: float):
        return token_logprobs(self.engine, to_device(batch, self.engine.device), temperature)

    def _reference_logprobs(self, batch: dict[str, Any], temperature: float):
        """The reference's log-probs of `batch` (on any device), on the engine's device."""
        if self.reference is not None:
            # An offloaded reference scores in host memory; its log-probs come back to the engine's device.
            device = module_device(self.reference)
            logprobs = token_logprobs(self.reference, to_device(batch, device), temperature)
            return logprobs.to(self.engine.device)
        with self.engine.module.disable_adapter():
            return token_logprobs(self.engine, to_device(batch, self.engine.device), temperature)

    # ----------------------------------------------------------------- weights out
    def export_policy(self) -> dict[str, bytes] | None:
        """LoRA: the adapter's files (rank 0 returns them; other ranks None). Collective under ZeRO-3."""
        with self._gathered(full_weights=False):
            if self.rank != 0:
                return None
            with tempfile.TemporaryDirectory(prefix="skinr1-adapter-") as directory:
                self.engine.module.save_pretrained(directory, safe_serialization=True)
                return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}

    def export_to_shared_memory(self, version: int, store_name: str, bucket_bytes: int) -> dict[str, Any] | None:
        """Publish the policy in this node's shared memory (rank 0; others None): the adapter's
        directory (LoRA) or one safetensors file per weight bucket (full). Collective under ZeRO-3."""
        import ray

        from learner.shared_store import SharedVersionStore, size_of
        from learner.weight_sync import bucket_named_tensors
        from rollout.weight_update import write_weight_buckets

        with self._gathered(full_weights=self.config.syncs_full_weights):
            if self.rank != 0:
                return None
            if self._shared_store is None or self._shared_store.directory.name != store_name:
                self._shared_store = SharedVersionStore(store_name)
            files: list[str] = []

            def write(staging: Path) -> None:
                if not self.config.syncs_full_weights:
                    self.engine.module.save_pretrained(str(staging), safe_serialization=True)
                    return
                files.extend(write_weight_buckets(staging, bucket_named_tensors(self._cpu_weights(), bucket_bytes)))

            directory = self._shared_store.publish(version, write)
        return {
            "directory": str(directory),
            "files": files,
            "bytes": size_of(directory),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def clear_shared_memory(self) -> None:
        if self._shared_store is not None:
            self._shared_store.clear()

    def export_weight_buckets(self, bucket_bytes: int) -> list[list[tuple[str, Any]]] | None:
        """Full weights (full fine-tuning, or a LoRA adapter merged in): (name, tensor) pairs in
        layer-aligned buckets of about `bucket_bytes`."""
        from learner.weight_sync import bucket_named_tensors

        with self._gathered(full_weights=True):
            if self.rank != 0:
                return None
            return bucket_named_tensors(self._cpu_weights(), bucket_bytes)

    def publish_weight_buckets(self, bucket_bytes: int) -> dict[str, Any] | None:
        """`export_weight_buckets` put into the object store by rank 0 (others None): {"buckets": ref,
        "bytes": payload}. The driver passes the reference on to the rollout actors without fetching
        the weights itself (a copy in and a copy out of the driver saved)."""
        import ray

        buckets = self.export_weight_buckets(bucket_bytes)
        if buckets is None:
            return None
        return {"buckets": ray.put(buckets), "bytes": sum(_nbytes(t) for bucket in buckets for _, t in bucket)}

    def publish_lora_factors(self, with_base: bool) -> dict[str, Any] | None:
        """LoRA merged by the rollout actors (`rl.lora_sync=merged_on_rollout`): rank 0 puts the
        adapter's factors (`learner.lora.lora_factors`) into the object store, and with `with_base`
        the unmerged base weights too, which the actors keep (others None). {"factors": ref,
        "base": ref or None, "bytes": payload}. Collective under ZeRO-3."""
        import ray

        from learner.lora import base_weights, lora_factors

        with self._gathered(full_weights=with_base):
            if self.rank != 0:
                return None
            factors = {name: (_cpu_copy(a), _cpu_copy(b), scaling)
                       for name, (a, b, scaling) in lora_factors(self.engine.module).items()}
            payload = sum(_nbytes(a) + _nbytes(b) for a, b, _ in factors.values())
            base = None
            if with_base:
                weights = [(name, _cpu_copy(tensor)) for name, tensor in base_weights(self.engine.module)]
                payload += sum(_nbytes(tensor) for _, tensor in weights)
                base = ray.put(weights)
            return {"factors": ray.put(factors), "base": base, "bytes": payload}

    def _cpu_weights(self):
        """(checkpoint name, contiguous CPU tensor) of the policy's full weights, a LoRA adapter
        merged in, lazily (call inside `_gathered`)."""
        module = self.engine.module
        if self.config.learner.lora.enabled:
            from learner.lora import merged_weights

            named = merged_weights(module)
        else:
            named = ((name, p.detach()) for name, p in module.named_parameters())
        return ((name, _cpu_copy(tensor)) for name, tensor in named)

    def _gathered(self, full_weights: bool):
        """ZeRO-3: whole parameters for the export inside; every weight, or only the trained ones
        (a LoRA adapter; under full fine-tuning those are every weight anyway)."""
        import contextlib

        if self.config.learner.deepspeed.zero_stage == 3:
            import deepspeed

            params = [p for p in self.engine.module.parameters() if p.requires_grad or full_weights]
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- checkpoints
    def save(self, target: str) -> dict[str, int] | None:
        """Every rank's DeepSpeed state, and (rank 0) the policy in Hugging Face format under
        `policy/`: the adapter (LoRA) or the whole model (full fine-tuning). Collective. `target`
        is the checkpoint's staging directory, or its staging prefix in a bucket: then this rank
        writes on its own node, uploads its part and returns its {file: size}."""
        from learner.bucket_checkpoint import save_part

        return save_part(target, self._write_checkpoint)

    def _write_checkpoint(self, directory: Path) -> None:
        self.engine.save_state(Path(directory) / "engine", self.rank)
        policy = Path(directory) / "policy"
        if self.config.learner.lora.enabled:
            files = self.export_policy()
            if self.rank == 0:
                policy.mkdir(parents=True, exist_ok=True)
                for name, payload in files.items():
                    (policy / name).write_bytes(payload)
        else:
            with self._gathered(full_weights=True):
                if self.rank == 0:
                    self.engine.module.save_pretrained(str(policy), safe_serialization=True)
        if self.rank == 0:
            self.processor.save_pretrained(policy)

    def load(self, source: str) -> None:
        """Resume from a checkpoint directory, or a committed checkpoint's URI in a bucket (this
        rank downloads the engine state to its own node)."""
        from learner.bucket_checkpoint import load_part

        load_part(source, lambda directory: self.engine.load_state(directory / "engine"))

    def shutdown(self) -> None:
        import torch.distributed as dist

        self.engine.destroy()
        if dist.is_initialized():
            # DeepSpeed's own teardown also drops the groups it cached (a clone of the world
            # group): a later engine in this process would otherwise broadcast over a dead group.
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()


def _cpu_copy(tensor):
    """A contiguous CPU copy, always: DeepSpeed's parameters can be views into one flat buffer, and
    a view pickles (object store) with its whole storage, the full model once per tensor."""
    return tensor.to("cpu", copy=True).contiguous()


def _nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size()
