"""Every stage's runtime settings, derived in one place from the run config.

One function per stage, as EasyR1's `PPOConfig.post_init` fills its workers' settings: the SFT
workers, the GRPO learner ranks, the rollout engines, evaluation and serving read the model's dtype,
pixel bounds and lengths from here, and no stage copies a config field by hand. A setting that no
function here reads (and no stage reads directly) is a bug: `tests/test_derive.py` checks that each
`model.*` field reaches every stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from learner.grpo_config import GRPOConfig
from learner.optim import precision_config
from learner.sft_config import SFTConfig
from rollout.engine import EngineSettings
from skinr1.models.settings import PolicySettings


def policy_settings(config) -> PolicySettings:
    """The `model` section as the settings every stage loads the policy and its images with."""
    model = config.model
    return PolicySettings(dtype=model.dtype, min_pixels=model.min_pixels, max_pixels=model.max_pixels,
                          trust_remote_code=model.trust_remote_code)


def engine_settings(policy: PolicySettings, max_model_len: int, seed: int, **engine: Any) -> EngineSettings:
    """A vLLM engine's settings for `policy`: the same dtype and pixel bounds as the learner's."""
    return EngineSettings(max_model_len=max_model_len, dtype=policy.dtype, min_pixels=policy.min_pixels,
                          max_pixels=policy.max_pixels, trust_remote_code=policy.trust_remote_code, seed=seed, **engine)


@dataclass(frozen=True)
class SFTRuntime:
    """What the SFT stage runs with."""

    sft: SFTConfig
    """The SFT section."""
    policy: PolicySettings
    """Dtype and image bounds of the workers."""


def sft_settings(config) -> SFTRuntime:
    policy = policy_settings(config)
    precision_config(config.sft.deepspeed.bf16, policy.dtype)  # a contradiction fails before Ray starts
    return SFTRuntime(config.sft, policy)


@dataclass(frozen=True)
class RLRuntime:
    """What the GRPO stage runs with: the learner ranks' and the rollout engines' settings."""

    rl: GRPOConfig
    """The rl section."""
    policy: PolicySettings
    """Dtype and image bounds of the learner ranks (and of the driver's prompt-length check)."""
    engine: EngineSettings
    """The rollout engines."""

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len


def rl_settings(config) -> RLRuntime:
    from rollout.engine import engine_core_in_process
    from rollout.weight_update import EXTENSION

    rl, policy = config.rl, policy_settings(config)
    precision_config(rl.learner.deepspeed.bf16, policy.dtype)
    # Engines serve LoRA adapters, or (full fine-tuning, LoRA merged) take full weights.
    adapters = not rl.syncs_full_weights
    engine = engine_settings(
        policy, rl.rollout.max_model_len, config.seed,
        gpu_memory_utilization=rl.rollout.gpu_memory_utilization,
        enforce_eager=rl.rollout.enforce_eager,
        tensor_parallel_size=rl.rollout.tensor_parallel_size,
        cpu_threads_bind=rl.rollout.cpu_threads_bind,
        engine_core_in_process=engine_core_in_process(rl.rollout.engine_core),
        enable_lora=adapters,
        max_lora_rank=rl.learner.lora.rank,
        worker_extension_cls=None if adapters else EXTENSION,
    )
    return RLRuntime(rl, policy, engine)


def eval_settings(config):
    """Evaluation of the run's checkpoints: the rollout engines' context length, dtype and bounds
    (what RL trained at), greedy answers as long as RL's, adapters served as the rollout engines
    got them (merged into the weights, or as LoRA)."""
    from skinr1.eval.runner import EvalSettings

    rl = config.rl
    engine = engine_settings(policy_settings(config), rl.rollout.max_model_len, config.seed,
                             gpu_memory_utilization=rl.rollout.gpu_memory_utilization,
                             enforce_eager=rl.rollout.enforce_eager,
                             tensor_parallel_size=rl.rollout.tensor_parallel_size)
    return EvalSettings(mode=config.reward.mode, max_tokens=rl.sampling.max_tokens,
                        include_system_prompt=config.trajectories.include_system_prompt, seed=config.seed,
                        engine=engine, merge_adapters=rl.lora_sync != "adapter")


def recorded_engine_settings(engine: EngineSettings, metadata: dict[str, Any]) -> EngineSettings:
    """Serving and `skinr1 eval` of a checkpoint: the engine settings it was trained with (recorded
    in its skinr1_policy.json), where the given settings leave them open ("auto" dtype, no bounds).
    Explicit settings win; a checkpoint without a record keeps the given settings."""
    from learner.sft import MODEL_SETTINGS

    recorded = metadata.get(MODEL_SETTINGS)
    if not recorded:
        return engine
    policy = PolicySettings.from_dict(recorded)
    return dataclasses.replace(
        engine,
        dtype=policy.dtype if engine.dtype == "auto" else engine.dtype,
        min_pixels=policy.min_pixels if engine.min_pixels is None else engine.min_pixels,
        max_pixels=policy.max_pixels if engine.max_pixels is None else engine.max_pixels,
    )
