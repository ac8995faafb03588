"""Learning-rate schedule and DeepSpeed engine configuration, shared by SFT and GRPO."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from skinr1.config.checks import at_least, one_of


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer `step` (0-based): linear warm-up, cosine decay."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class DeepSpeedSettings:
    """DeepSpeed inside each training worker."""

    zero_stage: int = 2
    """ZeRO stage: 0 (DDP-like), 1, 2 (shard optimizer + gradients) or 3 (also parameters)."""
    offload_optimizer: bool = False
    """Keep optimizer state in host memory (saves accelerator memory, costs step time)."""
    bf16: str = "auto"
    """bfloat16 training: "auto" (follow model.dtype: on exactly when the weights load in bfloat16),
    "true" (also mixed bf16 over float32 weights: DeepSpeed keeps float32 master weights) or "false"
    (an error with model.dtype=bfloat16). float16 weights always train with DeepSpeed's fp16 mode."""
    gradient_clipping: float = 1.0
    """Global gradient-norm clip."""

    def __post_init__(self) -> None:
        one_of("zero_stage", self.zero_stage, (0, 1, 2, 3))
        one_of("bf16", self.bf16, ("auto", "true", "false"))
        at_least("gradient_clipping", self.gradient_clipping, 0)


def precision_config(bf16: str, dtype: str) -> dict[str, Any]:
    """DeepSpeed's "bf16"/"fp16" sections for weights loaded in `dtype` (the run's model.dtype).

    The model's dtype decides: a machine's capabilities never switch precision silently (before,
    "auto" meant bf16 on any bf16-capable GPU, whatever dtype the run asked for)."""
    if dtype == "bfloat16" and bf16 == "false":
        raise ValueError("deepspeed.bf16=false contradicts model.dtype=bfloat16: the weights are bf16; "
                         "set model.dtype=float32 to train in full precision")
    if dtype == "float16" and bf16 == "true":
        raise ValueError("deepspeed.bf16=true contradicts model.dtype=float16")
    use_bf16 = dtype == "bfloat16" or (dtype == "float32" and bf16 == "true")
    return {"bf16": {"enabled": use_bf16}, "fp16": {"enabled": dtype == "float16"}}


def deepspeed_config(
    settings: DeepSpeedSettings,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    learning_rate: float,
    weight_decay: float,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The DeepSpeed JSON config for weights loaded in `dtype`. The LR schedule is ours (a LambdaLR
    passed to initialize)."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
        "gradient_clipping": settings.gradient_clipping,
        # torch's AdamW: skips compiling DeepSpeed's fused Adam (no compiler needed on CPU).
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": learning_rate, "weight_decay": weight_decay, "torch_adam": True},
        },
        "zero_optimization": {"stage": settings.zero_stage},
        **precision_config(settings.bf16, dtype),
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if settings.offload_optimizer and settings.zero_stage > 0:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    return config
