"""GRPO checkpoints: `<rl_dir>/checkpoints/step-NNNNNN/` written atomically, the last K kept.

Contents: `policy/` (the adapter in PEFT format, or for full fine-tuning the whole model in Hugging
Face format; either is what `final/` and evaluation read), `engine/` (every learner rank's DeepSpeed
state: weights it trains, optimizer, LR schedule) and `driver_state.json` (step, data cursor, policy
version, RNG state, reward curve).
The learners write into a staging directory that is committed only when complete (skinr1.atomic:
fsynced, renamed into place; a crash at any instant leaves the previous or the new checkpoint, which
`latest_checkpoint` recovers before it looks). A run_dir in a bucket commits each checkpoint there
instead (`commit_parts`): every learner rank uploads its part from its own node, the driver adds
its state and writes the marker once every part is there; a resumed run reads the bucket's newest
committed checkpoint, the driver its part (skinr1.run_mirror) and each rank its own.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Callable

from skinr1.atomic import commit_directory, recover, retire_directory, staging_path

log = logging.getLogger(__name__)

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
    """The newest complete checkpoint, after finishing or undoing a commit a crash interrupted."""
    from skinr1 import run_mirror

    for action in recover(checkpoint_root(rl_dir)):
        log.info("checkpoint recovery in %s: %s", checkpoint_root(rl_dir), action)
    run_mirror.pull_latest_checkpoint(checkpoint_root(rl_dir))  # a run_dir in a bucket: its newest commit
    found = list_checkpoints(rl_dir)
    return found[-1] if found else None


def staging_directory(rl_dir: str | Path, step: int) -> Path:
    return staging_path(checkpoint_root(rl_dir) / f"step-{step:06d}")


def commit_checkpoint(staging: Path, rl_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write the driver state last, commit the staging directory (replacing a checkpoint of the same
    step), then retire all but the newest `keep`."""
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
    final = commit_directory(staging, checkpoint_root(rl_dir) / f"step-{step:06d}")
    for old in list_checkpoints(rl_dir)[:-keep]:
        retire_directory(old)
    from skinr1 import run_mirror

    run_mirror.push_checkpoint(final, step, keep)  # a run_dir in a bucket: committed there too
    return final


def bucket_root(rl_dir: str | Path):
    """Where a run_dir in a bucket keeps the stage's checkpoints (a `storage.Location`); None for
    a local or shared run directory."""
    from skinr1 import run_mirror

    return run_mirror.remote_for(checkpoint_root(rl_dir))


def commit_parts(rl_dir: str | Path, step: int, state: dict[str, Any], keep: int,
                 save_parts: Callable[[str], list[dict[str, int] | None]]):
    """Commit step `step` of a bucket run: `save_parts(prefix_uri)` has every learner rank upload
    its part under a fresh staging prefix and returns their {file: size} manifests; the driver
    uploads its state, then writes the marker (storage.finish_checkpoint) only when every part is
    there. Returns the `storage.StoredCheckpoint`."""
    from skinr1 import run_mirror, storage
    from skinr1.checkpoint_parts import merge_parts

    root = bucket_root(rl_dir)
    target = storage.checkpoint_attempt(root, step)
    parts = save_parts(target.uri)
    text = json.dumps(state, indent=2)
    storage.write_text(target.child(STATE_FILE), text)
    run_mirror.push_curve(checkpoint_root(rl_dir))
    files = merge_parts([*parts, {STATE_FILE: len(text.encode())}], writers=len(parts) + 1)
    stored = storage.finish_checkpoint(target, step, files)
    run_mirror.after_commit(checkpoint_root(rl_dir), stored, keep)
    return stored


def learner_source(checkpoint: Path) -> str:
    """What learner ranks resume from: the bucket URI of a bucket run's committed checkpoint
    (each rank downloads its part on its own node), else the checkpoint directory."""
    from skinr1 import run_mirror

    return run_mirror.committed_source(checkpoint) or str(checkpoint)


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


def write_final_policy(checkpoint: Path, rl_dir: Path) -> Path:
    """Copy the last checkpoint's policy to `<rl_dir>/final` atomically."""
    import shutil

    from skinr1.atomic import atomic_directory

    final = rl_dir / "final"
    with atomic_directory(final) as staging:
        shutil.copytree(checkpoint / "policy", staging, dirs_exist_ok=True)
        state = read_state(checkpoint)
        meta = {"rl_steps": state["step"], "base_model": state["policy_base"], "model_settings": state.get("model_settings")}
        (staging / "skinr1_policy.json").write_text(json.dumps(meta, indent=2))
    return final
