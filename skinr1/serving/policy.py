"""Which policy a checkpoint directory serves: base model, optional LoRA adapter, name and version.

Checkpoints are the SFT/RL `final/` directories (a PEFT adapter plus `skinr1_policy.json`), merged
models (`skinr1 merge`) or any Hugging Face model directory / hub id. Nothing executable is loaded
from them: weights must be safetensors (pickle-based `.bin`/`.pt` files can run code when
unpickled), the metadata is JSON, and `trust_remote_code` stays off unless the config asks for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.export import ADAPTER_CONFIG
from learner.sft import POLICY_META
from skinr1.eval.engines import checkpoint_base
from skinr1.models.loading import resolve_model_source

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ServedPolicy:
    """A resolved checkpoint."""

    name: str
    """Model name reported to clients."""
    base: str
    """Base model directory or hub id that vLLM loads."""
    adapter: str | None
    """LoRA adapter directory served as a `LoRARequest`, or None for full weights."""
    adapter_rank: int = 0
    """Rank r of the adapter (the engine's max_lora_rank must be at least this)."""
    policy_version: int = 0
    """GRPO steps behind the policy (the RL driver's policy_version); 0 for SFT, merged or base models."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's skinr1_policy.json ({} when absent)."""


def resolve_policy(checkpoint: str | Path, name: str = "") -> ServedPolicy:
    """Resolve a checkpoint directory or hub id; raise FileNotFoundError/ValueError with the reason."""
    text = str(checkpoint)
    path = Path(text).expanduser()
    if path.is_dir() and not (path / ADAPTER_CONFIG).is_file():
        resolve_model_source(path)  # a clear error for a directory that is not a model at all
    base, adapter = checkpoint_base(str(path) if path.is_dir() else text)
    base = resolve_model_source(base)
    metadata = read_metadata(path) if path.is_dir() else {}
    rank = 0
    if adapter is not None:
        _require_safetensors(Path(adapter), ADAPTER_WEIGHTS)
        rank = _adapter_rank(Path(adapter))
    if Path(base).is_dir():
        _require_safetensors(Path(base), "*.safetensors")
    return ServedPolicy(
        name=name or _default_name(text, path),
        base=base,
        adapter=adapter,
        adapter_rank=rank,
        policy_version=int(metadata.get("rl_steps", 0) or 0),
        metadata=metadata,
    )


def read_metadata(directory: Path) -> dict[str, Any]:
    """A checkpoint directory's skinr1_policy.json ({} when absent)."""
    meta_path = directory / POLICY_META
    if not meta_path.is_file():
        return {}
    try:
        data = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{meta_path} must hold a JSON object")
    return data


def _require_safetensors(directory: Path, pattern: str) -> None:
    if not any(directory.glob(pattern)):
        pickled = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        detail = f" (found only {', '.join(pickled)}: pickle files are never loaded)" if pickled else ""
        raise ValueError(f"{directory} has no {pattern} weights{detail}; convert the checkpoint to safetensors")


def _adapter_rank(directory: Path) -> int:
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def _default_name(text: str, path: Path) -> str:
    if not path.is_dir():
        return text  # a hub id names itself
    parts = path.resolve().parts
    # ".../rl/final" says more than "final".
    return "/".join(parts[-2:]) if parts[-1] in ("final", "merged") and len(parts) > 1 else parts[-1]
