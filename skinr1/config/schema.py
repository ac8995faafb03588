"""The SkinR1 run configuration: one YAML file drives every stage (`skinr1/configs/demo.yaml`).

Stage sections reuse each package's own dataclass (learner.sft_config.SFTConfig,
rewards.config.RewardConfig, skinr1.trajectories.config.TrajectoriesConfig); this module adds the
shared sections and the cross-section checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from learner.grpo_config import GRPOConfig
from skinr1.config.checks import SettingError, above, at_least, optional_at_least
from learner.sft_config import SFTConfig
from rewards.config import RewardConfig
from skinr1.models.perception import PerceptionSettings
from skinr1.trajectories.config import TrajectoriesConfig
from skinr1.trackers import LoggingConfig

TINY_MODEL = "tiny"

REMOVED_KEYS = {
    "sft.min_pixels": "set model.min_pixels; every stage (SFT, RL, evaluation, serving) now reads the model's bounds",
    "sft.max_pixels": "set model.max_pixels; every stage (SFT, RL, evaluation, serving) now reads the model's bounds",
}
"""Keys of older configs and what replaced them (loading such a config fails with this message)."""


@dataclass
class ModelConfig:
    """The policy the run starts from."""

    name_or_path: str = TINY_MODEL
    """A local Hugging Face checkpoint, a hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct), or "tiny" for
    the random-weight tiny Qwen2.5-VL built under <run_dir>/base_model."""
    dtype: str = "float32"
    """Weights dtype of every stage: SFT and GRPO training (DeepSpeed's bf16/fp16 mode follows it),
    the merged RL base, the exported weights and the vLLM engines (bfloat16 on GPUs)."""
    trust_remote_code: bool = False
    """Allow a checkpoint to run its own code. Off: never needed for Qwen2.5-VL."""
    min_pixels: Optional[int] = None
    """Image area lower bound of every stage's processor and image resize (None: the checkpoint's own)."""
    max_pixels: Optional[int] = None
    """Image area upper bound of every stage (the paper caps images at 448x448 = 200704, i.e. at most
    256 image tokens; None: the checkpoint's own, ~12.8 MP for Qwen2.5-VL, up to ~16k tokens)."""
    perception_pretraining: PerceptionSettings = field(default_factory=PerceptionSettings)
    """Only for name_or_path "tiny": caption pretraining that gives the random-weight model a
    generalist's eyes (skin tone and visible features of every class on all skin types, never a
    diagnosis) before SFT; images 0 keeps the random weights. See skinr1/models/perception.py."""

    def __post_init__(self) -> None:
        from skinr1.models.settings import PolicySettings

        # The same rules as every stage's PolicySettings (one place), reported under their key.
        try:
            PolicySettings(dtype=self.dtype, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                           trust_remote_code=self.trust_remote_code)
        except ValueError as error:
            raise ValueError(f"model.{error}") from None


@dataclass
class DataConfig:
    """Where the manifests come from."""

    dir: str = ""
    """Directory holding dense.jsonl, sparse.jsonl, test.jsonl and test_sparse.jsonl (unified
    manifests, as written by `skinr1 data synth` / `skinr1 data prepare`). Empty: the synthetic
    demo dataset is generated under <run_dir>/data."""
    synthetic_scale: float = 1.0
    """Size multiplier of the generated synthetic dataset (when dir is empty)."""
    synthetic_dense_skin_types: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Fitzpatrick types of the generated dense (SFT) split, cycled per disease: a type listed
    twice is drawn twice as often. The other splits cover all six evenly. [1, 2, 3, 1, 2, 3, 4]
    mimics textbook images, mostly of lighter skin."""
    dense: str = "dense.jsonl"
    """Leaf-labelled manifest used for trajectories and SFT."""
    sparse: str = "sparse.jsonl"
    """Sparsely / coarsely labelled manifest used for GRPO."""
    test: list[str] = field(default_factory=lambda: ["test.jsonl", "test_sparse.jsonl"])
    """Held-out manifests for evaluation."""
    valid: str = "valid.jsonl"
    """Held-out manifest for validation during RL (rl.validate_every); "" = none."""

    def __post_init__(self) -> None:
        above("data.synthetic_scale", self.synthetic_scale, 0)
        types = list(self.synthetic_dense_skin_types)
        if not types or any(t not in range(1, 7) for t in types):
            raise ValueError(f"data.synthetic_dense_skin_types must list Fitzpatrick types 1-6, got {types}")


@dataclass
class RayConfig:
    """How the driver reaches Ray."""

    address: Optional[str] = None
    """Cluster address; None starts a local loopback node (or joins $RAY_ADDRESS under `ray job submit`)."""
    num_cpus: Optional[int] = None
    """Logical CPUs of a local node (None: the machine's). Logical CPUs only schedule actors; a
    2-core laptop can host more actors than cores."""

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise SettingError("ray.address", "must be a cluster address or unset (null), got an empty string")
        optional_at_least("ray.num_cpus", self.num_cpus, 1)


@dataclass
class SkinR1Config:
    """A whole SkinR1 run: trajectories -> SFT -> GRPO -> evaluation."""

    run_dir: str = "runs/demo"
    """Every output of the run lands under this directory: a local path, on a cluster a shared
    POSIX file system mounted on every node, or a bucket (s3://bucket/run, gs://bucket/run) that
    the driver mirrors in a node-local directory (skinr1.run_mirror)."""
    seed: int = 0
    """Global seed (stages derive theirs from it unless set explicitly)."""
    variant: str = ""
    """An ablation variant's name (`skinr1 ablate`): its GRPO stage lives under
    <run_dir>/ablations/<variant>/rl, while the stages it shares with the run (base model, data,
    trajectories, SFT) stay at the top and are reused. Empty: the run's own GRPO stage."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base policy."""
    data: DataConfig = field(default_factory=DataConfig)
    """Datasets."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray connection."""
    trajectories: TrajectoriesConfig = field(default_factory=TrajectoriesConfig)
    """Stage 1: textbook-guided trajectories (input/output_dir default to the run's paths)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Stage 2: SFT warm start."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward of the GRPO stage."""
    rl: GRPOConfig = field(default_factory=GRPOConfig)
    """Stage 3: hierarchical GRPO."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Where metrics, the run's parameters and the evaluation report go (jsonl, tensorboard, wandb, mlflow)."""

    def __post_init__(self) -> None:
        at_least("seed", self.seed, 0)
        from skinr1.storage import check_uri

        check_uri(self.run_dir, "run_dir")
        if self.variant and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.variant):
            raise ValueError(f"variant must be a plain name (letters, digits, _ . -), got {self.variant!r}")
        if self.rl.mode != self.reward.mode:
            raise ValueError(f"rl.mode {self.rl.mode!r} and reward.mode {self.reward.mode!r} must agree")
        tags = (self.reward.reasoning_tag, self.reward.answer_tag)
        if tags != (self.trajectories.reasoning_tag, self.trajectories.answer_tag):
            raise ValueError(
                f"reward tags {tags} differ from trajectories tags "
                f"{(self.trajectories.reasoning_tag, self.trajectories.answer_tag)}: the model would be "
                "rewarded for a format it was never taught"
            )

    # ----------------------------------------------------------------- derived paths
    @property
    def run_path(self) -> Path:
        if "://" in self.run_dir:
            from skinr1.run_mirror import register

            return register(self.run_dir)  # the node-local mirror of the bucket
        return Path(self.run_dir).expanduser().resolve()

    @property
    def data_path(self) -> Path:
        return Path(self.data.dir).expanduser().resolve() if self.data.dir else self.run_path / "data"

    @property
    def base_model_path(self) -> str:
        if self.model.name_or_path == TINY_MODEL:
            return str(self.run_path / "base_model")
        return self.model.name_or_path

    @property
    def trajectories_dir(self) -> Path:
        return Path(self.trajectories.output_dir).resolve() if self.trajectories.output_dir else self.run_path / "trajectories"

    @property
    def sft_dir(self) -> Path:
        return self.run_path / "sft"

    @property
    def rl_dir(self) -> Path:
        return self.run_path / "ablations" / self.variant / "rl" if self.variant else self.run_path / "rl"


def load_run_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> SkinR1Config:
    from skinr1.config.loader import load_config

    return load_config(SkinR1Config, path, overrides, removed=REMOVED_KEYS)
