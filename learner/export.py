"""Exporting policies: merge a LoRA adapter into full weights (for engines without adapter support)."""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(directory: str | Path) -> bool:
    return (Path(directory) / ADAPTER_CONFIG).is_file()


def adapter_base(directory: str | Path) -> str:
    """The base model an adapter was trained on, as PEFT recorded it."""
    config = json.loads((Path(directory) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{directory}/{ADAPTER_CONFIG} does not name its base model; pass --base")
    return base


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, policy=None) -> Path:
    """Load base + adapter, fold the adapter in, write safetensors + processor atomically.

    `policy` (`PolicySettings`; default float32, the processor's own bounds) gives the dtype the
    merged weights are written in (the model's: a bf16 run gets a bf16 base, not a float32 copy of
    twice the size) and the pixel bounds the saved processor carries."""
    from skinr1.atomic import atomic_directory
    from skinr1.models.settings import PolicySettings

    if not is_adapter(adapter_dir):
        raise FileNotFoundError(f"{adapter_dir} holds no {ADAPTER_CONFIG}: not a LoRA adapter")
    policy = policy or PolicySettings()
    base = base or adapter_base(adapter_dir)
    model = policy.load_policy(base, adapter=adapter_dir).merge_and_unload()
    processor = policy.load_processor(adapter_dir if (Path(adapter_dir) / "processor_config.json").is_file() else base)
    with atomic_directory(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
    return Path(out_dir)
