"""Configuration of the SFT warm start.

Image bounds and the weights' dtype are not here: they are the run's `model` settings, shared by
every stage (skinr1.config.derive); `sft.min_pixels` / `sft.max_pixels` of older configs are
rejected with a pointer to `model.*` (skinr1.config.schema.REMOVED_KEYS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from learner.lora import LoraSettings
from learner.optim import DeepSpeedSettings
from skinr1.config.checks import above, at_least, one_of, optional_at_least, within

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
        one_of("sft.strategy", self.strategy, STRATEGIES)
        for name in ("num_workers", "epochs", "micro_batch_size", "grad_accum_steps", "max_length",
                     "checkpoint_every", "keep_checkpoints"):
            at_least(f"sft.{name}", getattr(self, name), 1)
        at_least("sft.cpus_per_worker", self.cpus_per_worker, 0)
        above("sft.learning_rate", self.learning_rate, 0)
        within("sft.warmup_ratio", self.warmup_ratio, 0, 1, high_open=True)
        within("sft.min_lr_ratio", self.min_lr_ratio, 0, 1)
        at_least("sft.weight_decay", self.weight_decay, 0)
        at_least("sft.seed", self.seed, 0)
        optional_at_least("sft.max_steps", self.max_steps, 1)
        optional_at_least("sft.stop_after_step", self.stop_after_step, 1)
