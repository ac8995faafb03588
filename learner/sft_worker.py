"""The SFT rank: its logic as a plain class (`SFTWorker`) and the Ray Train loop that hosts it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from learner.data_order import BatchLayout, rank_micro_batches
from learner.sft_config import SFTConfig
from learner.sft_data import SFTDataError, collate, encode_record, read_sft_records

TRAINER_STATE = "trainer_state.json"
ADAPTER_DIR = "policy"


class SimulatedInterruption(RuntimeError):
    """Raised after `stop_after_step`'s checkpoint to exercise the resume path."""


class SFTWorker:
    """One SFT rank's logic without Ray: model, engine, data order and one optimizer step at a time.

    Ray Train's loop (`sft_train_loop`) hosts it; the level-1 GPU check (`skinr1.gpu_check`) runs it
    in-process. torch.distributed must be initialised (Ray Train does it; so does the check)."""

    def __init__(self, config: SFTConfig, model: str, data: str, rank: int, world: int, policy=None):
        import torch

        from learner.devices import require_accelerator
        from learner.lora import apply_lora
        from learner.train_engine import TrainingEngine
        from skinr1.models.settings import PolicySettings

        self.config, self.rank, self.world = config, rank, world
        self.policy = policy or PolicySettings()
        require_accelerator(config.use_gpu, f"SFT worker {rank}")
        torch.manual_seed(config.seed)  # identical adapter initialisation on every rank
        self.processor = self.policy.load_processor(model)
        module = self.policy.load_policy(model)
        if config.lora.enabled:
            module = apply_lora(module, config.lora)
        self.records = read_sft_records(data)
        self.layout = BatchLayout(len(self.records), config.micro_batch_size, world, config.grad_accum_steps)
        self.total_steps = config.max_steps or config.epochs * self.layout.steps_per_epoch
        self.engine = TrainingEngine(
            module,
            config.strategy,
            config.deepspeed,
            config.micro_batch_size,
            config.grad_accum_steps,
            world,
            config.learning_rate,
            config.weight_decay,
            self.total_steps,
            warmup_steps=int(config.warmup_ratio * self.total_steps),
            min_lr_ratio=config.min_lr_ratio,
            dtype=self.policy.dtype,
            use_gpu=config.use_gpu,
        )
        self.engine.module.train()

    def restore(self, directory: Path) -> int:
        """Load a checkpoint written by `save_into`; returns the step to continue from."""
        state = json.loads((Path(directory) / TRAINER_STATE).read_text())
        _check_resumable(state, self.config, self.world, len(self.records))
        self.engine.load_state(Path(directory) / "engine")
        return state["step"]

    def train_step(self, step: int) -> dict[str, Any]:
        """Optimizer step `step` (0-based) on this rank; returns the step's metrics row (collective)."""
        import torch.distributed as dist

        from learner.devices import to_device

        config, engine = self.config, self.engine
        started = time.perf_counter()
        losses, tokens, truncated, trained_ids = [], 0, 0, []
        pad_id = self.processor.tokenizer.pad_token_id
        for micro_batch in rank_micro_batches(self.layout, config.seed, step, self.rank):
            examples = []
            for index in micro_batch:
                example, was_truncated = _encode(self.processor, self.records[index], config, self.policy)
                truncated += was_truncated
                examples.append(example)
                trained_ids.append(self.records[index].id)
            batch = to_device(collate(examples, pad_id), engine.device)
            loss = engine(**batch).loss
            engine.micro_step(loss)
            losses.append(float(loss.detach()))
            tokens += int((batch["labels"] != -100).sum())
        metrics = _reduce_metrics(dist, losses, tokens, truncated, time.perf_counter() - started)
        return {**metrics, "lr": engine.learning_rate, "epoch": step // self.layout.steps_per_epoch,
                "samples": _gather_ids(dist, trained_ids, self.world), "total_steps": self.total_steps}

    def save_into(self, path: Path, step: int) -> None:
        """Every rank writes its engine shard; rank 0 adds the adapter/weights, processor and state."""
        self.engine.save_state(path / "engine", self.rank)
        if self.rank == 0:
            config = self.config
            export_policy(self.engine.module, self.processor, path / ADAPTER_DIR)
            state = {"step": step, "world_size": self.world, "seed": config.seed, "num_records": len(self.records),
                     "micro_batch_size": config.micro_batch_size, "grad_accum_steps": config.grad_accum_steps}
            (path / TRAINER_STATE).write_text(json.dumps(state))

    def close(self) -> None:
        self.engine.destroy()


def sft_train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-rank loop: hosts an `SFTWorker`. `loop_config` = {"sft": SFTConfig, "model":
    path, "data": path, "run_dir": path, "policy": PolicySettings}."""
    import ray.train

    from skinr1.metrics import MetricsLogger

    config: SFTConfig = loop_config["sft"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    worker = SFTWorker(config, loop_config["model"], loop_config["data"], rank, world, loop_config.get("policy"))
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            start_step = worker.restore(Path(directory))

    run_dir = Path(loop_config["run_dir"])
    logger = MetricsLogger(run_dir / "metrics.jsonl", run_dir / "tensorboard", resumed_at=start_step) if rank == 0 else None
    total_steps = worker.total_steps
    for step in range(start_step, total_steps):
        row = worker.train_step(step)  # the driver's progress bar follows these rows
        finished = step + 1
        if logger:
            logger.log(finished, row)
        if finished % config.checkpoint_every == 0 or finished == total_steps:
            _report_checkpoint(worker, finished, row)
            if config.stop_after_step is not None and finished >= config.stop_after_step and finished < total_steps:
                raise SimulatedInterruption(f"stopped after step {finished} as configured")
        # Metrics go to our JSONL/TensorBoard every step; Ray Train hears of checkpoints only
        # (a report is a round trip through the controller, ~1 s, longer than a tiny model's step).
    if logger:
        logger.close()
    worker.close()


def _report_checkpoint(worker: SFTWorker, step: int, row: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="skinr1-sft-ckpt-") as directory:
        worker.save_into(Path(directory), step)
        metrics = {k: v for k, v in row.items() if k != "samples"} | {"step": step}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _encode(processor, record, config: SFTConfig, policy) -> tuple[dict, int]:
    try:
        return encode_record(processor, record, config.max_length, policy), 0
    except SFTDataError as error:
        if "exceed max_length" not in str(error):
            raise
    # Keep the prompt whole and cut the completion: the sample still teaches its opening.
    example = encode_record(processor, record, 10**9, policy)
    for key in ("input_ids", "labels", "mm_token_type_ids"):
        example[key] = example[key][: config.max_length]
    return example, 1


def _reduce_metrics(dist, losses: list[float], tokens: int, truncated: int, elapsed: float) -> dict[str, float]:
    import torch

    # NCCL (the GPU backend) reduces CUDA tensors only; gloo reduces host tensors.
    on_gpu = dist.is_initialized() and dist.get_backend() == "nccl"
    local = torch.tensor([sum(losses), len(losses), tokens, truncated, elapsed], dtype=torch.float64,
                         device="cuda" if on_gpu else "cpu")  # "cuda": the rank's current device
    if dist.is_initialized():
        dist.all_reduce(local)
        world = dist.get_world_size()
    else:
        world = 1
    loss_sum, count, token_sum, truncated_sum, elapsed_sum = local.tolist()
    step_time = elapsed_sum / world
    return {
        "loss": loss_sum / max(count, 1),
        "tokens": int(token_sum),
        "tokens_per_s": token_sum / max(step_time, 1e-9),
        "step_time_s": step_time,
        "truncated": int(truncated_sum),
    }


def _gather_ids(dist, ids: list[str], world: int) -> list[str]:
    if not dist.is_initialized() or world == 1:
        return ids
    gathered: list[list[str] | None] = [None] * world
    dist.all_gather_object(gathered, ids)
    return [i for part in gathered for i in (part or [])]


def export_policy(module, processor, directory: Path) -> None:
    """Hugging Face format: the PEFT adapter (or full weights) plus processor and tokenizer."""
    directory.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)


def _check_resumable(state: dict, config: SFTConfig, world: int, num_records: int) -> None:
    expected = {"world_size": world, "seed": config.seed, "num_records": num_records,
                "micro_batch_size": config.micro_batch_size, "grad_accum_steps": config.grad_accum_steps}
    changed = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: checkpoint {a} vs now {b}" for k, (a, b) in changed.items())
        raise ValueError(f"cannot resume exactly: the data order depends on settings that changed ({detail})")
