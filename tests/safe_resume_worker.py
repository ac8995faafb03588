"""Run by tests/test_safe_checkpoint.py in its own process (DeepSpeed needs a torch.distributed group):
train a tiny model for two steps with DeepSpeed, save its state, resume it into a fresh engine,
then plant a pickle payload in each of the checkpoint's files and try to resume from it.

Prints one line per outcome: "RESUMED", then "REFUSED <file>" or "LOADED <file>" per planted file.
The payload creates MARKER when unpickled.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


class Payload:
    """Unpickling this calls open(marker, "w"): the file appears if the loader runs pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def build(stage: int):
    import torch

    from learner.optim import DeepSpeedSettings
    from learner.train_engine import TrainingEngine

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen weight, as under LoRA
    return TrainingEngine(model, "deepspeed", DeepSpeedSettings(zero_stage=stage), micro_batch_size=1,
                          grad_accum_steps=1, world_size=1, learning_rate=1e-2, weight_decay=0.0,
                          total_steps=10, warmup_steps=2)


def main(work: Path, stage: int, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import torch
    import torch.distributed as dist

    from learner.safe_checkpoint import UnsafeCheckpointError

    dist.init_process_group("gloo", rank=0, world_size=1)
    trained = build(stage)
    for _ in range(2):
        trained.micro_step(trained.engine(torch.randn(2, 4)).sum())
    state = work / "state"
    trained.save_state(state, 0)

    resumed = build(stage)
    resumed.load_state(state)
    same_weights = all(torch.equal(a.detach(), b.detach()) for a, b in zip(trained.module.parameters(), resumed.module.parameters()))
    assert same_weights, "resumed weights differ"
    assert resumed.learning_rate == trained.learning_rate, (resumed.learning_rate, trained.learning_rate)
    print("RESUMED", flush=True)

    marker = work / "MARKER"
    for file in sorted(p for p in state.rglob("*.pt")):
        planted = work / "planted"
        shutil.rmtree(planted, ignore_errors=True)
        shutil.copytree(state, planted)
        target = planted / file.relative_to(state)
        content = torch.load(file, weights_only=False)  # our own file, written just above
        content["note"] = Payload(str(marker))
        torch.save(content, target)
        try:
            build(stage).load_state(planted)
            print("LOADED", file.relative_to(state), flush=True)
        except UnsafeCheckpointError as error:
            print("REFUSED", file.relative_to(state), "|", str(error).splitlines()[0], flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
