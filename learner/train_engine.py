"""One interface over the two ways a rank trains: a DeepSpeed engine or torch DDP.

SFT workers and GRPO learner ranks call `micro_step(loss)` once per micro-batch; the optimizer
steps at every accumulation boundary. Both variants save and restore their optimizer and scheduler
state to a directory (every rank writes its own shard) so that resume is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learner.optim import DeepSpeedSettings, deepspeed_config, warmup_cosine_factor
from learner.safe_checkpoint import TensorOnlyLoading, load_tensors_only

_STATE_TAG = "state"


class TrainingEngine:
    """Wraps the model, optimizer and LR schedule of one data-parallel rank."""

    def __init__(
        self,
        model,
        strategy: str,
        deepspeed_settings: DeepSpeedSettings,
        micro_batch_size: int,
        grad_accum_steps: int,
        world_size: int,
        learning_rate: float,
        weight_decay: float,
        total_steps: int,
        warmup_steps: int,
        min_lr_ratio: float = 0.0,
        dtype: str = "float32",
        use_gpu: bool = False,
    ):
        import torch

        from learner.devices import check_placement, module_device, require_accelerator

        self.strategy = strategy
        self.grad_accum_steps = grad_accum_steps
        self.gradient_clipping = deepspeed_settings.gradient_clipping
        self._micro_steps = 0
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters")

        def schedule(step: int) -> float:
            return warmup_cosine_factor(step, total_steps, warmup_steps, min_lr_ratio)

        if strategy == "deepspeed":
            import deepspeed

            config = deepspeed_config(
                deepspeed_settings, micro_batch_size, grad_accum_steps, world_size, learning_rate, weight_decay, dtype
            )
            engine, optimizer, _, _ = deepspeed.initialize(
                model=model,
                model_parameters=trainable,
                config=config,
                lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
                dist_init_required=False,
            )
            # Resuming must not unpickle arbitrary objects from run_dir (learner.safe_checkpoint).
            engine.checkpoint_engine = TensorOnlyLoading(engine.checkpoint_engine)
            self.engine = engine
            self.module = engine.module
            self.optimizer = optimizer
            self.scheduler = engine.lr_scheduler
            self.device = engine.device
        elif strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            require_accelerator(use_gpu, "ddp training")
            # DDP, unlike DeepSpeed, leaves the model where it is: one visible GPU per rank (Ray).
            self.device = torch.device("cuda", torch.cuda.current_device()) if use_gpu else torch.device("cpu")
            model.to(self.device)
            device_ids = [self.device] if use_gpu else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids) if torch.distributed.is_initialized() else model
            self.engine = wrapped
            self.module = model
            self.optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=weight_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        else:
            raise ValueError(f"unknown strategy {strategy!r}")
        check_placement(self.device, use_gpu, f"{strategy} engine")
        check_placement(module_device(self.module), use_gpu, f"{strategy} engine's model")

    def __call__(self, **inputs: Any):
        """Forward a batch; its tensors must already be on `self.device` (see learner.devices)."""
        return self.engine(**inputs)

    def micro_step(self, loss) -> bool:
        """Backward one micro-batch's loss; returns True when this call stepped the optimizer."""
        import torch

        self._micro_steps += 1
        boundary = self._micro_steps % self.grad_accum_steps == 0
        if self.strategy == "deepspeed":
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed steps the optimizer only at accumulation boundaries
            return boundary
        (loss / self.grad_accum_steps).backward()
        if boundary:
            if self.gradient_clipping > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.module.parameters() if p.requires_grad], self.gradient_clipping
                )
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return boundary

    @property
    def learning_rate(self) -> float:
        if self.strategy == "deepspeed":
            return float(self.engine.get_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"])

    def save_state(self, directory: str | Path, rank: int) -> None:
        """Optimizer, scheduler and (trainable) weights of this rank. Every rank must call it."""
        directory = Path(directory)
        if self.strategy == "deepspeed":
            self.engine.save_checkpoint(str(directory), tag=_STATE_TAG, exclude_frozen_parameters=True)
            return
        import torch

        if rank == 0:  # DDP replicas are identical; one copy suffices
            directory.mkdir(parents=True, exist_ok=True)
            trainable = {n: p.detach().cpu() for n, p in self.module.named_parameters() if p.requires_grad}
            torch.save(
                {"trainable": trainable, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                directory / "ddp_state.pt",
            )

    def load_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        if self.strategy == "deepspeed":
            path, _ = self.engine.load_checkpoint(
                str(directory), tag=_STATE_TAG, load_module_strict=False, load_optimizer_states=True,
                load_lr_scheduler_states=True,
            )
            if path is None:
                raise FileNotFoundError(f"no DeepSpeed state under {directory}")
            return
        state = load_tensors_only(directory / "ddp_state.pt", map_location="cpu")
        missing = self.module.load_state_dict(state["trainable"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint has unexpected weights: {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def destroy(self) -> None:
        # ZeRO-3 aborts at interpreter exit unless the engine is torn down explicitly.
        if self.strategy == "deepspeed":
            self.engine.destroy()
