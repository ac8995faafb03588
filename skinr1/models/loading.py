"""Load a policy (model + processor) from a local directory or a hub id.

Real hub loading is kept (users point this at `Qwen/Qwen2.5-VL-7B-Instruct`); the tests and the
demo use local paths only. `trust_remote_code` stays off unless asked for: a checkpoint must not be
able to run code on the machine that loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_local_checkpoint(name_or_path: str | Path) -> bool:
    return Path(name_or_path).is_dir()


def resolve_model_source(name_or_path: str | Path, marker: str = "config.json") -> str:
    """Return a loadable string, with a clear error for a local path that does not exist.

    A string that looks like a path ("./x", "/x", "runs/...") but is missing is an error here, not
    a confusing hub lookup later. `org/name` strings are treated as hub ids.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise FileNotFoundError(f"{path} is a directory but has no {marker}: not a Hugging Face checkpoint")
        return str(path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") != 1
    if looks_like_path:
        raise FileNotFoundError(f"model path {text!r} does not exist")
    return text


def load_processor(name_or_path: str | Path, trust_remote_code: bool = False, **kwargs: Any):
    from transformers import AutoProcessor

    # Adapter directories carry the processor files but no model config.
    source = resolve_model_source(name_or_path, marker="processor_config.json")
    return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)


def load_policy(
    name_or_path: str | Path,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    adapter: str | Path | None = None,
    **kwargs: Any,
):
    """Load a Qwen2.5-VL-style policy; apply a PEFT LoRA adapter from `adapter` when given."""
    import torch
    from transformers import AutoModelForImageTextToText

    source = resolve_model_source(name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        source, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **kwargs
    )
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model
