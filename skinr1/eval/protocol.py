"""`skinr1 eval --protocol paper`: the paper's five multiple-choice evaluations, per dataset.

Questions are built once per manifest (`protocol_questions`, pure and seeded), asked to every
checkpoint with greedy vLLM decoding (checkpoints sharing a base model share one engine, as in
`skinr1.eval.runner`), and scored by option letter: the first letter in the answer block, a
completion without one counting as wrong. report.json holds, per checkpoint, evaluation and
dataset, the accuracy, n, parse failures, a 95% bootstrap interval and the per-record outcomes;
report.md has one table per evaluation in the paper's layout (rows = checkpoints, columns =
datasets plus their average).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from skinr1.eval.bootstrap import bootstrap_ci, percentile_interval, resampled_means
from skinr1.eval.protocol_questions import EVALUATIONS, ProtocolQuestion, build_questions, parse_letter, question_messages
from skinr1.eval.report import dumps_readable, markdown_table
from skinr1.eval.runner import EvalSettings
from skinr1.prompts import DEFAULT_FORMAT, AnswerFormat

TITLES = {
    "omnimedvqa": "OmniMedVQA multiple choice",
    "in_domain": "In-domain multiple choice (right = the deepest correct option)",
    "malignancy": "Benign / precancerous / malignant",
    "hierarchical": "Hierarchical (options = the path's nodes, right = the label)",
    "differential": "Differential diagnosis (truth vs. its DDx neighbours)",
}
"""Table titles of report.md, one per evaluation."""

EXAMPLES_PER_EVALUATION = 2
"""Completions kept per checkpoint and evaluation in report.json, to eyeball what the model wrote."""

QuestionTable = dict[str, dict[str, tuple[list[ProtocolQuestion], int]]]
"""evaluation -> dataset -> (questions, records skipped)."""


@dataclass(frozen=True)
class Outcome:
    """One question answered by one checkpoint."""

    record_id: str
    """Record the question was about."""
    answer: str
    """The right letter."""
    choice: str | None
    """The letter the completion chose; None is a parse failure."""
    reason: str
    """Where the letter was found, or why none was (see `protocol_questions.LetterParse`)."""

    @property
    def correct(self) -> bool:
        return self.choice == self.answer


def score_question(question: ProtocolQuestion, completion: str, fmt: AnswerFormat = DEFAULT_FORMAT) -> Outcome:
    """Read the chosen letter (only the question's own letters count) and compare it with the answer."""
    parsed = parse_letter(completion, question.letters, fmt)
    return Outcome(question.record_id, question.answer, parsed.letter, parsed.reason)


def summarize(outcomes: Sequence[Outcome], skipped: int = 0, seed: int = 0) -> dict[str, Any]:
    """Accuracy (None without questions), n, parse failures, 95% bootstrap CI and per-record columns."""
    n = len(outcomes)
    correct = [int(o.correct) for o in outcomes]
    failures = sum(o.choice is None for o in outcomes)
    return {
        "n": n,
        "accuracy": sum(correct) / n if n else None,
        "ci": list(bootstrap_ci(correct, seed=seed)) if n else None,
        "parse_failures": failures,
        "parse_failure_rate": failures / n if n else None,
        "skipped": skipped,
        "per_record": {"record_id": [o.record_id for o in outcomes], "correct": correct,
                       "choice": [o.choice for o in outcomes], "answer": [o.answer for o in outcomes]},
    }


def average_over_datasets(summaries: Mapping[str, dict], resamples: int = 2000, level: float = 0.95,
                          seed: int = 0) -> dict[str, Any]:
    """The paper's average column: the unweighted mean of the datasets' accuracies, with a stratified
    bootstrap interval (each dataset resampled on its own, then the resampled accuracies averaged).
    Datasets without questions are left out; None values when no dataset has any."""
    outcomes = [np.asarray(s["per_record"]["correct"], dtype=float) for s in summaries.values() if s["n"]]
    if not outcomes:
        return {"accuracy": None, "ci": None, "datasets": 0}
    means = np.mean([resampled_means(o, resamples, seed + i) for i, o in enumerate(outcomes)], axis=0)
    return {"accuracy": float(np.mean([o.mean() for o in outcomes])), "ci": list(percentile_interval(means, level)),
            "datasets": len(outcomes)}


def protocol_questions(datasets: Mapping[str, Sequence], taxonomy, seed: int = 0,
                       kb_differentials: Mapping[str, tuple[str, ...]] | None = None) -> QuestionTable:
    """Every evaluation's questions for every dataset (DDx neighbours from the shipped knowledge base
    unless `kb_differentials` is given)."""
    if kb_differentials is None:
        from skinr1.trajectories.knowledge_base import load_knowledge_base

        kb_differentials = load_knowledge_base(None, taxonomy).differentials()
    return {evaluation: {name: build_questions(evaluation, records, taxonomy, kb_differentials, seed)
                         for name, records in datasets.items()}
            for evaluation in EVALUATIONS}


def checkpoint_results(table: QuestionTable, completions: Mapping[str, Mapping[str, Sequence[str]]],
                       fmt: AnswerFormat = DEFAULT_FORMAT, seed: int = 0) -> dict[str, Any]:
    """Score one checkpoint's completions (evaluation -> dataset -> one per question, in order):
    {"evaluations": {evaluation: {"datasets": {dataset: summary}, "average": {...}}}, "examples": [...]}."""
    evaluations: dict[str, Any] = {}
    examples: list[dict] = []
    for evaluation, per_dataset in table.items():
        summaries = {}
        for dataset, (questions, skipped) in per_dataset.items():
            texts = completions[evaluation][dataset]
            if len(texts) != len(questions):
                raise ValueError(f"{evaluation}/{dataset}: {len(texts)} completions for {len(questions)} questions")
            outcomes = [score_question(q, t, fmt) for q, t in zip(questions, texts)]
            summaries[dataset] = summarize(outcomes, skipped, seed)
            kept = sum(e["evaluation"] == evaluation for e in examples)
            examples += [{"evaluation": evaluation, "dataset": dataset, "record_id": q.record_id, "answer": q.answer,
                          "choice": o.choice, "completion": t}
                         for q, o, t in zip(questions, outcomes, texts)][: max(0, EXAMPLES_PER_EVALUATION - kept)]
        evaluations[evaluation] = {"datasets": summaries, "average": average_over_datasets(summaries, seed=seed)}
    return {"evaluations": evaluations, "examples": examples}


def question_overview(table: QuestionTable) -> dict[str, dict[str, dict[str, Any]]]:
    """Per evaluation and dataset: questions asked, records skipped, option counts and how the right
    letters are spread (a model that always says "A" scores the share of A answers)."""
    return {evaluation: {dataset: {"n": len(questions), "skipped": skipped,
                                   "options": dict(sorted(Counter(str(len(q.options)) for q in questions).items())),
                                   "answers": dict(sorted(Counter(q.answer for q in questions).items()))}
                         for dataset, (questions, skipped) in per_dataset.items()}
            for evaluation, per_dataset in table.items()}


# ------------------------------------------------------------------------------- running
def evaluate_protocol(checkpoints: dict[str, str], manifests: list[str], settings: EvalSettings) -> dict[str, Any]:
    """Run the five evaluations for every checkpoint on every manifest; returns the report dict."""
    from skinr1.eval.engines import served_checkpoints
    from skinr1.eval.runner import load_manifest_records
    from skinr1.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    datasets = {Path(m).stem: load_manifest_records(m, settings.limit) for m in manifests}
    if len(datasets) != len(manifests):
        raise ValueError(f"two manifests share a file name (the dataset's name in the report): {manifests}")
    table = protocol_questions(datasets, taxonomy, settings.seed)
    report: dict[str, Any] = {
        "protocol": "paper", "evaluations": list(EVALUATIONS), "titles": TITLES, "datasets": list(datasets),
        "settings": {k: v for k, v in asdict(settings).items() if k != "mode"},
        "questions": question_overview(table), "checkpoints": {},
    }
    results = {}
    for _, name, worker in served_checkpoints(checkpoints, settings):
        completions = _answer(worker, table, settings)
        results[name] = {"path": checkpoints[name], **checkpoint_results(table, completions, seed=settings.seed)}
    report["checkpoints"] = {name: results[name] for name in checkpoints}  # command-line order
    return report


def _answer(worker, table: QuestionTable, settings: EvalSettings) -> dict[str, dict[str, list[str]]]:
    """Greedy completions for every question of the table, in one batched generate call."""
    from rollout.sampling import RolloutRequest, SamplingSettings

    tokenizer = worker.llm.get_tokenizer()
    keys, requests = [], []
    for evaluation, per_dataset in table.items():
        for dataset, (questions, _) in per_dataset.items():
            for index, question in enumerate(questions):
                messages = question_messages(question, DEFAULT_FORMAT, settings.include_system_prompt)
                prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                keys.append((evaluation, dataset))
                requests.append(RolloutRequest(f"{evaluation}/{dataset}/{index}", prompt, question.image))
    greedy = SamplingSettings(group_size=1, temperature=0.0, max_tokens=settings.max_tokens)
    results = worker.generate(requests, greedy, seed=settings.seed) if requests else []
    completions: dict[str, dict[str, list[str]]] = {e: {d: [] for d in per} for e, per in table.items()}
    for (evaluation, dataset), result in zip(keys, results):
        completions[evaluation][dataset].append(result.samples[0].text)
    return completions


# ------------------------------------------------------------------------------- report files
def _cell(summary: Mapping[str, Any], failures: bool = True) -> str:
    if summary.get("accuracy") is None:
        return "-"
    low, high = summary["ci"]
    text = f"{summary['accuracy']:.3f} [{low:.2f}, {high:.2f}]"
    return text + (f" pf={summary['parse_failures']}" if failures and summary.get("parse_failures") else "")


def format_protocol_table(report: Mapping[str, Any], evaluation: str) -> str:
    """One evaluation's table: a row per checkpoint, a column per dataset (n in the header), the average."""
    overview = report["questions"][evaluation]
    columns = ["checkpoint", *(f"{d} (n={overview[d]['n']})" for d in report["datasets"]), "average"]
    rows = []
    for name, checkpoint in report["checkpoints"].items():
        result = checkpoint["evaluations"][evaluation]
        rows.append([name, *(_cell(result["datasets"][d]) for d in report["datasets"]),
                     _cell(result["average"], failures=False)])
    return markdown_table(columns, rows)


def format_protocol_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# SkinR1 evaluation: the paper's protocol", "",
             "Accuracy [95% bootstrap CI]; a completion without an option letter is a parse failure (pf=count) "
             "and counts as wrong. Average: the unweighted mean over datasets, its interval resampling each "
             "dataset on its own.", ""]
    for number, evaluation in enumerate(report["evaluations"], start=1):
        lines += [f"## {number}. {report['titles'][evaluation]}", "", format_protocol_table(report, evaluation), ""]
        skipped = {d: s["skipped"] for d, s in report["questions"][evaluation].items() if s["skipped"]}
        if skipped:
            lines += ["Records without such a question (skipped): "
                      + ", ".join(f"{d}: {k}" for d, k in skipped.items()), ""]
    lines += ["Checkpoints: " + ", ".join(f"{name} = `{c['path']}`" for name, c in report["checkpoints"].items())]
    return "\n".join(lines) + "\n"


def write_protocol_report(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json and report.md under `out_dir`; returns their paths."""
    from skinr1.data.records import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    write_text_atomic(paths["json"], dumps_readable(dict(report)))
    write_text_atomic(paths["markdown"], format_protocol_markdown(report))
    return paths
