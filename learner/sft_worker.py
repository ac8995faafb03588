"""The per-worker SFT loop that Ray Train runs on every rank."""

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


def sft_train_loop(loop_config: dict[str, Any]) -> None:
    """Train on this rank. `loop_config` = {"sft": SFTConfig, "model": path, "data": path, "run_dir": path}."""
    import ray.train
    import torch
    import torch.distributed as dist

    from learner.lora import apply_lora
    from learner.train_engine import TrainingEngine
    from skinr1.metrics import MetricsLogger
    from skinr1.models.loading import load_policy, load_processor

    config: SFTConfig = loop_config["sft"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed)  # identical adapter initialisation on every rank

    processor = load_processor(loop_config["model"])
    model = load_policy(loop_config["model"])
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
    records = read_sft_records(loop_config["data"])
    layout = BatchLayout(len(records), config.micro_batch_size, world, config.grad_accum_steps)
    total_steps = config.max_steps or config.epochs * layout.steps_per_epoch
    engine = TrainingEngine(
        model,
        config.strategy,
        config.deepspeed,
        config.micro_batch_size,
        config.grad_accum_steps,
        world,
        config.learning_rate,
        config.weight_decay,
        total_steps,
        warmup_steps=int(config.warmup_ratio * total_steps),
        min_lr_ratio=config.min_lr_ratio,
    )

    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = json.loads((Path(directory) / TRAINER_STATE).read_text())
            _check_resumable(state, config, world, len(records))
            engine.load_state(Path(directory) / "engine")
            start_step = state["step"]

    run_dir = Path(loop_config["run_dir"])
    logger = MetricsLogger(run_dir / "metrics.jsonl", run_dir / "tensorboard") if rank == 0 else None
    pad_id = processor.tokenizer.pad_token_id
    engine.module.train()
    for step in range(start_step, total_steps):
        started = time.perf_counter()
        losses, tokens, truncated, trained_ids = [], 0, 0, []
        for micro_batch in rank_micro_batches(layout, config.seed, step, rank):
            examples = []
            for index in micro_batch:
                example, was_truncated = _encode(processor, records[index], config)
                truncated += was_truncated
                examples.append(example)
                trained_ids.append(records[index].id)
            batch = collate(examples, pad_id)
            loss = engine(**batch).loss
            engine.micro_step(loss)
            losses.append(float(loss.detach()))
            tokens += int((batch["labels"] != -100).sum())
        elapsed = time.perf_counter() - started
        metrics = _reduce_metrics(dist, losses, tokens, truncated, elapsed)
        all_ids = _gather_ids(dist, trained_ids, world)
        finished = step + 1
        row = {**metrics, "lr": engine.learning_rate, "epoch": step // layout.steps_per_epoch, "samples": all_ids,
               "total_steps": total_steps}  # the driver's progress bar follows these rows
        if logger:
            logger.log(finished, row)
        if finished % config.checkpoint_every == 0 or finished == total_steps:
            _save_checkpoint(engine, processor, config, rank, world, finished, len(records), row)
            if config.stop_after_step is not None and finished >= config.stop_after_step and finished < total_steps:
                raise SimulatedInterruption(f"stopped after step {finished} as configured")
        # Metrics go to our JSONL/TensorBoard every step; Ray Train hears of checkpoints only
        # (a report is a round trip through the controller, ~1 s, longer than a tiny model's step).
    if logger:
        logger.close()
    engine.destroy()


def _encode(processor, record, config: SFTConfig) -> tuple[dict, int]:
    try:
        return encode_record(processor, record, config.max_length, config.min_pixels, config.max_pixels), 0
    except SFTDataError as error:
        if "exceed max_length" not in str(error):
            raise
    # Keep the prompt whole and cut the completion: the sample still teaches its opening.
    example = encode_record(processor, record, 10**9, config.min_pixels, config.max_pixels)
    for key in ("input_ids", "labels", "mm_token_type_ids"):
        example[key] = example[key][: config.max_length]
    return example, 1


def _reduce_metrics(dist, losses: list[float], tokens: int, truncated: int, elapsed: float) -> dict[str, float]:
    import torch

    local = torch.tensor([sum(losses), len(losses), tokens, truncated, elapsed], dtype=torch.float64)
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


def _save_checkpoint(engine, processor, config, rank, world, step, num_records, row) -> None:
    """Every rank writes its engine shard; rank 0 adds the adapter/weights, processor and state."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="skinr1-sft-ckpt-") as directory:
        path = Path(directory)
        engine.save_state(path / "engine", rank)
        if rank == 0:
            export_policy(engine.module, processor, path / ADAPTER_DIR)
            state = {"step": step, "world_size": world, "seed": config.seed, "num_records": num_records,
                     "micro_batch_size": config.micro_batch_size, "grad_accum_steps": config.grad_accum_steps}
            (path / TRAINER_STATE).write_text(json.dumps(state))
        metrics = {k: v for k, v in row.items() if k != "samples"} | {"step": step}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


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
