"""Which engine serves which checkpoint during evaluation, and as few engine starts as possible.

An engine start costs far more than generating a held-out set with a small model (on a 2-core
machine ~35 s, a third of the demo's evaluation), so:
- checkpoints served as LoRA adapters share the engine of their base model, the adapter switched
  per checkpoint;
- full-weight checkpoints (base models, and adapters merged into their base when the run serves
  adapters merged: `EvalSettings.merge_adapters`) are served one after the other by one engine: the
  next checkpoint's weights are reloaded into the running engine whenever it has the same model
  config, tokenizer and processor (`same_serving_files`); otherwise a new engine starts.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollout.actor import RolloutWorker
    from rollout.engine import EngineSettings
    from skinr1.eval.runner import EvalSettings

JSON_SERVING_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "processor_config.json",
                      "preprocessor_config.json", "special_tokens_map.json", "chat_template.json")
"""Compared as JSON, without the keys that only record where and by what a file was written."""
BYTE_SERVING_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja")
"""Compared byte for byte."""
PROVENANCE_KEYS = frozenset({"_name_or_path", "name_or_path", "transformers_version", "is_local", "local_files_only"})


def checkpoint_base(path: str) -> tuple[str, str | None]:
    """(base model, adapter dir or None) of a checkpoint directory or hub id."""
    from learner.export import adapter_base, is_adapter

    if Path(path).is_dir() and is_adapter(path):
        return adapter_base(path), str(Path(path).resolve())
    return path, None


def served_checkpoints(checkpoints: dict[str, str], settings: EvalSettings, scratch: str | Path | None = None):
    """(model, checkpoint name, worker serving it) for every checkpoint (see the module docstring).
    Merged adapters are written under `scratch` one at a time and deleted after; engines shut down
    when they are no longer needed."""
    by_base: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    to_merge: list[tuple[str, str]] = []
    for name, path in checkpoints.items():
        base, adapter = checkpoint_base(path)
        if adapter and settings.merge_adapters:
            to_merge.append((name, adapter))
        else:
            by_base[base].append((name, adapter))
    lora = {base: members for base, members in by_base.items() if any(adapter for _, adapter in members)}
    yield from _serve_lora(lora, settings)
    plain = [(base, name) for base, members in by_base.items() if base not in lora for name, _ in members]
    yield from _serve_full_models(_full_models(plain, to_merge, settings, scratch), settings)


def _serve_lora(by_base: dict[str, list[tuple[str, str | None]]], settings: EvalSettings):
    for base, members in by_base.items():
        worker = eval_engine(base, settings, lora=True)
        try:
            for version, (name, adapter) in enumerate(members, start=1):
                worker.use_adapter(version, adapter)
                yield base, name, worker
        finally:
            worker.shutdown()
            del worker


def _full_models(plain: list[tuple[str, str]], to_merge: list[tuple[str, str]], settings: EvalSettings,
                 scratch: str | Path | None) -> Iterator[tuple[str, str]]:
    """(model directory or hub id, checkpoint name): the plain ones, then each adapter merged into a
    copy of its base that lives until the consumer asks for the next (one merged copy on disk)."""
    yield from plain
    for name, adapter in to_merge:
        with tempfile.TemporaryDirectory(prefix="skinr1-eval-", dir=scratch) as merged_dir:
            yield str(merged_copy(adapter, Path(merged_dir) / "model", settings.engine)), name


def _serve_full_models(models: Iterator[tuple[str, str]], settings: EvalSettings):
    serving: tuple[str, RolloutWorker] | None = None  # (the model the engine started on, its worker)
    try:
        for version, (model, name) in enumerate(models, start=1):
            if serving is not None and serving[0] == model:
                pass  # the same model again (one checkpoint under two names)
            elif serving is not None and same_serving_files(serving[0], model):
                serving[1].load_checkpoint(version, model)
            else:
                if serving is not None:
                    serving[1].shutdown()  # the old engine stops before the next one starts
                serving = (model, eval_engine(model, settings, lora=False))
            yield model, name, serving[1]
    finally:
        if serving is not None:
            serving[1].shutdown()


def same_serving_files(first: str, second: str) -> bool:
    """Whether an engine started on checkpoint `first` serves `second` once its weights are
    reloaded: both local directories with the same model config, generation config, tokenizer,
    processor and chat template (where and by which version the files were written aside)."""
    a, b = Path(first), Path(second)
    if not (a.is_dir() and b.is_dir()) or not (a / "config.json").is_file():
        return False
    for name in JSON_SERVING_FILES + BYTE_SERVING_FILES:
        left, right = a / name, b / name
        if left.is_file() != right.is_file():
            return False
        if not left.is_file():
            continue
        if name in BYTE_SERVING_FILES:
            if left.read_bytes() != right.read_bytes():
                return False
        elif _without_provenance(left) != _without_provenance(right):
            return False
    return True


def _without_provenance(path: Path) -> dict:
    return {key: value for key, value in json.loads(path.read_text()).items() if key not in PROVENANCE_KEYS}


def merged_copy(adapter: str, out_dir: Path, engine: EngineSettings) -> Path:
    """The adapter folded into its base, in the engine's dtype (float32 when "auto")."""
    from learner.export import merge_adapter

    images = engine.images()
    policy = dataclasses.replace(images, dtype=engine.dtype) if engine.dtype != "auto" else images
    return merge_adapter(adapter, out_dir, policy=policy)


def eval_engine(model: str, settings: EvalSettings, lora: bool) -> RolloutWorker:
    """An engine for `model`: switching LoRA adapters, or (without LoRA) able to reload weights."""
    from rollout.actor import RolloutWorker
    from rollout.weight_update import EXTENSION

    engine = dataclasses.replace(settings.engine, enable_lora=lora, worker_extension_cls=None if lora else EXTENSION)
    return RolloutWorker("eval", model, engine)
