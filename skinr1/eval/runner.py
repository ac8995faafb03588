"""Batched greedy vLLM inference over held-out manifests, scored with the shared answer parser.

Checkpoints that share a base model (the base itself and LoRA adapters trained on it) are served by
one engine, switching adapters per checkpoint: one engine start instead of one per checkpoint.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinr1.eval.metrics import Prediction, metrics_by_dataset


@dataclass
class EvalSettings:
    """How checkpoints are evaluated."""

    mode: str = "open"
    """Question mode: "open" (free-text diagnosis) or "choice" (lettered options)."""
    max_tokens: int = 256
    """Longest completion generated per image."""
    include_system_prompt: bool = True
    """Ask with the shared system prompt (as SFT taught)."""
    limit: int = 0
    """Evaluate only the first N records of each manifest (0 = all)."""
    seed: int = 0
    """Seed of the choice options."""
    max_model_len: int = 2048
    """Engine context length."""
    min_pixels: int | None = None
    """Image area lower bound (None: the checkpoint's processor setting)."""
    max_pixels: int | None = None
    """Image area upper bound."""


def checkpoint_base(path: str) -> tuple[str, str | None]:
    """(base model, adapter dir or None) of a checkpoint directory or hub id."""
    from learner.export import adapter_base, is_adapter

    if Path(path).is_dir() and is_adapter(path):
        return adapter_base(path), str(Path(path).resolve())
    return path, None


def load_manifest_records(path: str | Path, limit: int = 0):
    from skinr1.data.records import read_jsonl

    records = [r for r in read_jsonl(path) if r.node_id is not None]
    return records[:limit] if limit else records


def evaluate_checkpoints(checkpoints: dict[str, str], manifests: list[str], settings: EvalSettings) -> dict[str, Any]:
    """Run every checkpoint on every manifest; returns the report dict (see `write_report`)."""
    from skinr1.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    datasets = {Path(m).stem: load_manifest_records(m, settings.limit) for m in manifests}
    by_base: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for name, path in checkpoints.items():
        base, adapter = checkpoint_base(path)
        by_base[base].append((name, adapter))
    report: dict[str, Any] = {"mode": settings.mode, "checkpoints": {}}
    for base, members in by_base.items():
        worker = eval_engine(base, settings, any(adapter for _, adapter in members))
        try:
            for version, (name, adapter) in enumerate(members, start=1):
                worker.use_adapter(version, adapter)
                predictions, samples = _predict(worker, datasets, settings, taxonomy)
                report["checkpoints"][name] = {
                    "path": checkpoints[name],
                    "datasets": metrics_by_dataset(taxonomy, predictions),
                    "examples": samples,
                }
        finally:
            worker.shutdown()
            del worker
    return report


def eval_engine(base: str, settings: EvalSettings, lora: bool):
    from rollout.actor import RolloutWorker
    from rollout.engine import EngineSettings

    engine = EngineSettings(
        max_model_len=settings.max_model_len,
        enable_lora=lora,
        min_pixels=settings.min_pixels,
        max_pixels=settings.max_pixels,
        seed=settings.seed,
    )
    return RolloutWorker("eval", base, engine)


def _predict(worker, datasets, settings: EvalSettings, taxonomy) -> tuple[list[Prediction], list[dict]]:
    from rollout.sampling import SamplingSettings

    tokenizer = worker.llm.get_tokenizer()
    greedy = SamplingSettings(group_size=1, temperature=0.0, max_tokens=settings.max_tokens)
    predictions: list[Prediction] = []
    examples: list[dict] = []
    for dataset, records in datasets.items():
        questions, requests = held_out_requests(tokenizer, records, settings.mode, taxonomy,
                                                settings.include_system_prompt, settings.seed)
        results = worker.generate(requests, greedy, seed=settings.seed)
        texts = [result.samples[0].text for result in results]
        predictions += score_answers(records, questions, texts, settings.mode, taxonomy, dataset)
        examples += [{"record_id": r.record_id, "label": r.node_id, "completion": t}
                     for r, t in zip(records, texts)][: max(0, 5 - len(examples))]
    return predictions, examples


def held_out_requests(tokenizer, records, mode: str, taxonomy, include_system_prompt: bool, seed: int):
    """(questions, rollout requests) for held-out records; choice options come from the labels of
    the same set, as in evaluation (and in validation during RL)."""
    from rollout.sampling import RolloutRequest
    from skinr1.prompts.questions import make_question

    pool = sorted({r.node_id for r in records})
    questions = [make_question(tokenizer, r.record_id, r.image, r.node_id, mode, taxonomy, pool,
                               include_system_prompt=include_system_prompt, seed=seed) for r in records]
    return questions, [RolloutRequest(q.record_id, q.prompt, q.image) for q in questions]


def score_answers(records, questions, texts: list[str], mode: str, taxonomy, dataset: str) -> list[Prediction]:
    """Parse each answer and resolve it on the taxonomy (the shared answer parser)."""
    from skinr1.prompts import parse_completion, resolve_answer

    predictions = []
    for record, question, text in zip(records, questions, texts):
        parsed = parse_completion(text)
        predicted, _ = resolve_answer(parsed, taxonomy, mode, question.options)
        predictions.append(Prediction(record.record_id, record.node_id, predicted, parsed.stated_malignancy,
                                      record.fitzpatrick_type, dataset, parsed.format_ok))
    return predictions


def save_json(report: dict, path: Path) -> None:
    from skinr1.data.records import write_text_atomic

    write_text_atomic(path, json.dumps(report, indent=2))
