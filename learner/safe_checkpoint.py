"""Loading training state without running code from the checkpoint.

DeepSpeed reads its checkpoint files with `torch.load(weights_only=False)`: a plain unpickle, so
anyone who can write into run_dir could make a resumed job run their code. `TensorOnlyLoading`
replaces the load of a DeepSpeed engine's checkpoint engine with torch's weights-only unpickler,
which builds only tensors, containers and primitive values, plus the few DeepSpeed classes its
checkpoints hold (`DEEPSPEED_CHECKPOINT_CLASSES`); anything else is refused with
`UnsafeCheckpointError` before a single object of it is created. Saving is DeepSpeed's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# module -> class names that DeepSpeed (0.19) writes into model and ZeRO optimizer state files:
# the loss scaler object, the ZeRO stage enum and the fragment addresses of the flat partitions.
# Their unpickling only sets attributes (or calls an enum / namedtuple constructor with plain data).
DEEPSPEED_CHECKPOINT_CLASSES = {
    "deepspeed.runtime.fp16.loss_scaler": ("LossScaler", "DynamicLossScaler"),
    "deepspeed.runtime.zero.config": ("ZeroStageEnum",),
    "deepspeed.utils.tensor_fragment": ("fragment_address",),
}


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds objects other than tensors and plain data (or cannot be read as such)."""


def allowed_globals() -> list[Any]:
    """The DeepSpeed classes the weights-only unpickler may build. Only from modules already
    imported: a DeepSpeed engine has imported them all, and other loads (DDP state) need none, so
    they do not pay for importing DeepSpeed."""
    found = []
    for module_name, names in DEEPSPEED_CHECKPOINT_CLASSES.items():
        module = sys.modules.get(module_name)
        if module is not None:
            found += [getattr(module, name) for name in names if hasattr(module, name)]
    return found


def load_tensors_only(path: str | Path, map_location: Any = None) -> Any:
    """`torch.load` of a checkpoint file that refuses to unpickle anything but tensors, plain data
    and `allowed_globals()`."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects that are not tensors or plain data "
            f"({first_line}); a file in run_dir was written by something other than this trainer, "
            "so it is not loaded (see docs/cluster.md, 'What is exposed where')"
        ) from None


class TensorOnlyLoading:
    """A DeepSpeed checkpoint engine whose `load` is `load_tensors_only`; everything else (saving,
    commits) is the wrapped engine's."""

    def __init__(self, inner: Any):
        self._inner = inner

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_tensors_only(path, map_location=map_location)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
