"""GRPO checkpoints: `<rl_dir>/checkpoints/step-NNNNNN/` written atomically, the last K kept.

Contents: `policy/` (the adapter in PEFT format, or for full fine-tuning the whole model in Hugging
Face format; either is what `final/` and evaluation read), `engine/` (every learner rank's DeepSpeed
state: weights it trains, optimizer, LR schedule) and `driver_state.json` (step, data cursor, policy
version, RNG state, reward curve).
The learners write into a staging directory that is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

STATE_FILE = "driver_state.json"


def checkpoint_root(rl_dir: str | Path) -> Path:
    return Path(rl_dir) / "checkpoints"


def list_checkpoints(rl_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging directories start with '.' and are ignored)."""
    root = checkpoint_root(rl_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file())


def latest_checkpoint(rl_dir: str | Path) -> Path | None:
    found = list_checkpoints(rl_dir)
    return found[-1] if found else None


def staging_directory(rl_dir: str | Path, step: int) -> Path:
    root = checkpoint_root(rl_dir)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}.", suffix=".tmp"))


def commit_checkpoint(staging: Path, rl_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write the driver state last, rename the staging directory into place, prune old ones."""
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    os.chmod(staging, 0o755)
    final = checkpoint_root(rl_dir) / f"step-{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    for old in list_checkpoints(rl_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def rng_state() -> dict[str, Any]:
    import torch

    state = random.getstate()
    return {"python": [state[0], list(state[1]), state[2]], "numpy": _numpy_state(), "torch": torch.get_rng_state().tolist()}


def _numpy_state() -> list:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
