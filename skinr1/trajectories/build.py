"""Build the SFT set: plan, retrieve, write, verify every record; in-process or across Ray tasks.

Output under `output_dir`: sft.jsonl (verified conversations), rejects.jsonl (every record that did
not make it, with its reason), report.json / report.txt (counts per type, node and reject reason)
and config.yaml (the resolved config). Records are processed in contiguous chunks; chunk results
are concatenated in input order, so the output does not depend on how many workers ran. With caps
set (`max_per_diagnosis_per_type`, `max_per_type`), records over a cap are dropped in the driver
before chunking (see caps.py) and listed after the other rejects.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from skinr1.data.records import Record, read_jsonl, write_jsonl, write_text_atomic
from skinr1.trajectories.caps import cap_reasons
from skinr1.trajectories.config import TrajectoriesConfig
from skinr1.trajectories.context import Context, Job, build_context
from skinr1.trajectories.kinds import RANDOM_DDX_TYPES
from skinr1.trajectories.plan import Plan, plan_record, stable_unit
from skinr1.trajectories.report import build_report, format_report, reject_row, sft_row
from skinr1.trajectories.retrieval import build_query, candidate_nodes
from skinr1.trajectories.verify import verify_completion

log = logging.getLogger(__name__)


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    teacher: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def cache_dir(config: TrajectoriesConfig) -> str:
    return config.teacher.cache_dir or str(Path(config.output_dir) / "teacher_cache")


def make_writer(config: TrajectoriesConfig, context: Context, concurrency: int):
    if config.writer == "template":
        from skinr1.trajectories.writers_template import TemplateWriter

        return TemplateWriter(context, seed=config.seed)
    from skinr1.trajectories.writers_teacher import TeacherWriter

    return TeacherWriter(context, config.teacher, cache_dir(config), concurrency=concurrency)


def make_plan(record: Record, config: TrajectoriesConfig, context: Context) -> Plan:
    assert record.node_id is not None
    return plan_record(
        record.record_id, record.node_id, config.seed, config.types.as_dict(), context.graph, context.described,
        context.random_pool,
    )


def make_job(record: Record, config: TrajectoriesConfig, context: Context) -> Job:
    node_id = record.node_id
    assert node_id is not None
    plan = make_plan(record, config, context)
    query = build_query(node_id, context.taxonomy, context.kb, record.original_label)
    neighbours = context.graph[node_id][0]
    if plan.trajectory_type in RANDOM_DDX_TYPES:  # its passages let the teacher say how it differs
        neighbours = (*neighbours, plan.differential)
    candidates = candidate_nodes(node_id, context.taxonomy, neighbours)
    return Job(record, plan, tuple(context.index.retrieve(query, candidates, config.top_k)))


def apply_caps(config: TrajectoriesConfig, records: Sequence[Record]) -> tuple[list[Record], list[dict]]:
    """(records to write, reject rows of the capped ones), both in input order. Records without a
    known node pass through: they are rejected later with their own reason."""
    context = build_context(config)
    known = [i for i, r in enumerate(records) if r.node_id is not None and r.node_id in context.taxonomy]
    plans = {i: make_plan(records[i], config, context) for i in known}
    reasons = cap_reasons(
        [(plans[i].trajectory_type, str(records[i].node_id)) for i in known],
        [stable_unit(config.seed, records[i].record_id, "cap") for i in known],
        config.max_per_diagnosis_per_type,
        config.max_per_type,
    )
    capped = {i: why for i, why in zip(known, reasons) if why is not None}
    rejects = [
        reject_row(records[i].record_id, records[i].image, records[i].node_id, why, config.writer,
                   job=Job(records[i], plans[i], ()))
        for i, why in capped.items()
    ]
    return [r for i, r in enumerate(records) if i not in capped], rejects


def process_chunk(config: TrajectoriesConfig, records: Sequence[Record], concurrency: int) -> ChunkResult:
    """Plan, write and verify one chunk of records (runs in the driver or inside a Ray task)."""
    started = time.perf_counter()
    context = build_context(config)
    writer = make_writer(config, context, concurrency)
    result = ChunkResult()
    jobs: list[Job] = []
    for record in records:
        if record.node_id is None:
            result.rejects.append(reject_row(record.record_id, record.image, None, "unmapped_label", writer.name))
        elif record.node_id not in context.taxonomy:
            result.rejects.append(reject_row(record.record_id, record.image, record.node_id, "unknown_node", writer.name))
        else:
            jobs.append(make_job(record, config, context))
    for job, generation in zip(jobs, writer.generate(jobs)):
        record = job.record
        if generation.completion is None:
            result.rejects.append(
                reject_row(record.record_id, record.image, job.node_id, generation.error or "no_completion", writer.name,
                           detail=generation.detail, job=job)
            )
            continue
        verdict = verify_completion(
            generation.completion, job.node_id, job.plan.trajectory_type, context.taxonomy, context.graph,
            context.matcher, context.fmt, job.plan.differential,
        )
        if verdict.ok:
            result.rows.append(
                sft_row(job, generation.completion, verdict, writer.name, context, config.seed,
                        config.include_system_prompt, generation.cache_hit)
            )
        else:
            result.rejects.append(
                reject_row(record.record_id, record.image, job.node_id, verdict.reason, writer.name,
                           verdict.reasons, verdict.details, job, generation.completion)
            )
    if hasattr(writer, "stats"):
        result.teacher = writer.stats.as_dict()
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------- parallelism
def effective_workers(config: TrajectoriesConfig, n_records: int) -> int:
    if config.num_workers > 1:
        return config.num_workers
    return max(1, os.cpu_count() or 1) if n_records >= config.parallel_threshold else 1


def split_chunks(records: Sequence[Record], workers: int, chunk_size: int) -> list[list[Record]]:
    """Contiguous chunks; about 4 per worker by default so one slow chunk does not idle the rest."""
    size = chunk_size or max(1, math.ceil(len(records) / (workers * 4)))
    return [list(records[i : i + size]) for i in range(0, len(records), size)]


def run_parallel(config: TrajectoriesConfig, records: Sequence[Record], workers: int) -> list[ChunkResult]:
    """Chunks as Ray tasks, at most `workers` in flight; results in chunk order."""
    import ray

    from skinr1.cluster import init_ray, shutdown_ray

    started_here = not init_ray().get("reused", False)
    try:
        task = ray.remote(num_cpus=1)(process_chunk)
        # The total teacher concurrency is shared out so `teacher.concurrency` bounds the endpoint load.
        per_task = max(1, config.teacher.concurrency // workers)
        chunks = split_chunks(records, workers, config.chunk_size)
        pending: dict[Any, int] = {}
        results: dict[int, ChunkResult] = {}
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < workers:
                pending[task.remote(config, chunks[next_chunk], per_task)] = next_chunk
                next_chunk += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            results[index] = ray.get(done[0])
            log.info("chunk %d/%d done (%d records)", index + 1, len(chunks), len(chunks[index]))
        return [results[i] for i in range(len(chunks))]
    finally:
        if started_here:
            shutdown_ray()


# --------------------------------------------------------------------------- entry point
def run(config: TrajectoriesConfig) -> dict[str, Any]:
    """Build the SFT set described by `config`; returns the report (also written to disk)."""
    from skinr1.config.loader import to_yaml

    config.check_paths()
    started = time.perf_counter()
    records = read_jsonl(config.input)
    if config.limit:
        records = records[: config.limit]
    records_in = len(records)
    capped: list[dict] = []
    if config.max_per_diagnosis_per_type or config.max_per_type:
        records, capped = apply_caps(config, records)
    workers = effective_workers(config, len(records))
    if workers > 1:
        results = run_parallel(config, records, workers)
    else:
        results = [process_chunk(config, records, config.teacher.concurrency)]
    rows = [row for r in results for row in r.rows]
    rejects = [row for r in results for row in r.rejects] + capped

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft.jsonl", rows)
    write_jsonl(out / "rejects.jsonl", rejects)
    extra: dict[str, Any] = {
        "writer": config.writer,
        "input": config.input,
        "output_dir": str(out),
        "workers": workers,
        "chunks": len(results),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "chunk_seconds": [round(r.seconds, 3) for r in results],
    }
    if config.writer == "teacher":
        extra["teacher"] = _sum_teacher(r.teacher for r in results)
    report = build_report(rows, rejects, records_in, extra)
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    write_text_atomic(out / "report.txt", format_report(report))
    write_text_atomic(out / "config.yaml", to_yaml(config))
    return report


def _sum_teacher(stats) -> dict[str, Any]:
    total: dict[str, Any] = {"requests": 0, "cache_hits": 0, "retries": 0}
    failures: Counter = Counter()
    for s in stats:
        for key in ("requests", "cache_hits", "retries"):
            total[key] += s.get(key, 0)
        failures.update(s.get("failures", {}))
    total["failures"] = dict(failures)
    return total
