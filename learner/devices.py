"""Where the learner's tensors live: batches go to the engine's device, and a run configured for
GPUs never trains on the CPU without saying so.

DeepSpeed moves the model to its accelerator's device; every batch built on the CPU (the
processor's output, masks, advantages, rollout log-probs) must follow it, or the first forward
fails (or, worse, a mismatch is hidden by a CPU fallback).
"""

from __future__ import annotations

from typing import Any


def to_device(value: Any, device) -> Any:
    """`value` with every tensor (in nested dicts, lists and tuples) moved to `device`; other
    values unchanged. Integer tensors stay integer: only placement changes here, not dtype."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(item, device) for item in value)
    return value


def wanted_device_type(use_gpu: bool) -> str:
    return "cuda" if use_gpu else "cpu"


def require_accelerator(use_gpu: bool, what: str) -> None:
    """Fail before any work when GPUs are configured but CUDA is not usable in this process."""
    if not use_gpu:
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{what}: use_gpu=true but CUDA is not available in this process (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}); refusing to train on the CPU instead. Set use_gpu=false for a CPU run."
        )


def check_placement(device, use_gpu: bool, what: str) -> None:
    """The engine put the model where the config asked (DeepSpeed picks its accelerator itself:
    a CUDA machine with use_gpu=false, or the reverse, must not go unnoticed)."""
    import torch

    actual = torch.device(device).type
    wanted = wanted_device_type(use_gpu)
    if actual != wanted:
        raise RuntimeError(
            f"{what}: the engine placed the model on {device} but use_gpu={str(use_gpu).lower()} asks for {wanted} "
            "(DeepSpeed chooses its accelerator from the machine; set DS_ACCELERATOR=cpu for a CPU run on a GPU machine)"
        )


def module_device(module):
    """The device of a module's first parameter (CPU for a module without parameters)."""
    import torch

    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")
