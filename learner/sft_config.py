"""Configuration of the SFT warm start.

Image bounds and the weights' dtype are not here: they are the run's `model` settings, shared by
every stage (skinr1.config.derive); `sft.min_pixels` / `sft.max_pixels` of older configs are
rejected with a pointer to `model.*` (skinr1.config.schema.REMOVED_KEYS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from learner.lora import LoraSettings
from learner.optim import DeepSpeedSettings

STRATEGIES = ("deepspeed", "ddp")


@dataclass
class SFTConfig:
    """Supervised fine-tuning on verified trajectories (Ray Train workers, DeepSpeed or DDP, LoRA)."""

    num_workers: int = 2
    """Ray Train workers (one data-parallel rank each)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); false trains on CPU with gloo."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker."""
    strategy: str = "deepspeed"
    """"deepspeed" (ZeRO inside each worker) or "ddp" (plain torch DistributedDataParallel)."""
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    """DeepSpeed settings (strategy=deepspeed)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings; lora.enabled=false trains every weight."""
    learning_rate: float = 3e-5
    """Peak learning rate (paper: 3e-5)."""
    warmup_ratio: float = 0.03
    """Share of steps with linear warm-up (paper: 3%)."""
    min_lr_ratio: float = 0.0
    """Cosine decay floor, as a share of the peak."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epochs: int = 4
    """Passes over the trajectory set (paper: 4)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps (overrides epochs when set)."""
    micro_batch_size: int = 1
    """Samples per rank per forward pass."""
    grad_accum_steps: int = 8
    """Micro-batches accumulated per optimizer step (effective batch = micro x workers x this)."""
    max_length: int = 1024
    """Prompt + completion tokens; longer completions are truncated and counted (paper: 1024)."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many optimizer steps (and at the end)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept (older ones are deleted)."""
    seed: int = 0
    """Seed for the data order and the adapter initialisation."""
    stop_after_step: Optional[int] = None
    """Simulate an interruption: the workers raise after saving this step's checkpoint (for tests
    and drills of the resume path)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"sft.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        positive = {
            "num_workers": self.num_workers,
            "epochs": self.epochs,
            "micro_batch_size": self.micro_batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "max_length": self.max_length,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"sft.{name} must be >= 1, got {value}")
        if self.learning_rate <= 0:
            raise ValueError(f"sft.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"sft.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"sft.max_steps must be >= 1 when set, got {self.max_steps}")
