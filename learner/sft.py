"""SFT warm start with Ray Train: N workers, DeepSpeed (or DDP) inside, LoRA through PEFT.

`run_sft` starts (or resumes) a Ray Train run under `<run_dir>/ray`, then exports the final policy
in Hugging Face format to `<run_dir>/final` atomically: the PEFT adapter (adapter_config.json +
adapter_model.safetensors) or full weights, plus the processor and tokenizer. That directory loads
in vLLM (`LoRARequest`, or merged with `skinr1 merge`) and in the GRPO learner.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from learner.sft_config import SFTConfig
from learner.sft_worker import ADAPTER_DIR, TRAINER_STATE, sft_train_loop

POLICY_META = "skinr1_policy.json"
MODEL_SETTINGS = "model_settings"
"""Key of POLICY_META holding the `PolicySettings` the policy was trained with (serving reads it)."""


def run_sft(model: str, data: str, run_dir: str | Path, config: SFTConfig, policy=None, checkpoints=None,
            on_row=None) -> Path:
    """Train (resuming from the run's last checkpoint if there is one); return the final policy dir.

    `policy` (`PolicySettings`, from skinr1.config.derive.sft_settings) sets the weights' dtype and
    the image bounds; it is recorded in the policy's metadata so that serving uses the same ones.
    `checkpoints` (a `skinr1.storage.Location`; default `<run_dir>/ray`) is Ray Train's storage:
    a bucket there makes every worker upload its checkpoints and a resume on any node find them.
    `on_row` receives each metrics row as rank 0 writes it (experiment trackers)."""
    from skinr1.models.settings import PolicySettings

    import ray.train
    from ray.train.torch import TorchTrainer

    from skinr1.atomic import atomic_directory
    from skinr1.progress import FollowMetrics

    policy = policy or PolicySettings()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        sft_train_loop,
        train_loop_config={"sft": config, "model": str(model), "data": str(Path(data).resolve()), "run_dir": str(run_dir),
                           "policy": policy},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name="sft",
            storage_path=checkpoints.path if checkpoints is not None else str(run_dir / "ray"),
            storage_filesystem=checkpoints.filesystem if checkpoints is not None else None,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    with FollowMetrics(run_dir / "metrics.jsonl", "sft", on_row=on_row):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("SFT finished without a checkpoint")
    final = run_dir / "final"
    with result.checkpoint.as_directory() as directory:
        state = json.loads((Path(directory) / TRAINER_STATE).read_text())
        with atomic_directory(final) as staging:
            shutil.copytree(Path(directory) / ADAPTER_DIR, staging, dirs_exist_ok=True)
            meta = {"base_model": str(model), "lora": config.lora.enabled, "sft_steps": state["step"],
                    MODEL_SETTINGS: policy.to_dict()}
            (staging / POLICY_META).write_text(json.dumps(meta, indent=2))
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete Ray Train checkpoint of an SFT run (for inspection and tests)."""
    candidates = sorted((Path(run_dir) / "ray" / "sft").glob("checkpoint_*"))
    complete = [c for c in candidates if (c / TRAINER_STATE).is_file()]
    return complete[-1] if complete else None
