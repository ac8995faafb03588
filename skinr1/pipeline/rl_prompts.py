"""The GRPO stage's prompts: the sparse manifest's mapped records as an endless shuffled stream of
rollout requests.

The stream's position (`cursor`) is all a checkpoint needs to continue with the same data order;
prompts that cannot fit the engines' context are skipped and counted (`PromptBudget`), never sent
to vLLM. No Ray and no engine are needed here: the driver owns one stream and sends what it draws.
"""

from __future__ import annotations

import logging
from typing import Any

from rollout.sampling import RolloutRequest
from skinr1 import run_mirror
from skinr1.pipeline.rl_batch import stream_indices

log = logging.getLogger(__name__)


def mapped_records(manifest: str, taxonomy) -> list:
    """The manifest's records whose label maps onto the taxonomy. Unmapped ground truth is
    rejected here, when the batch is built, never at scoring time (the count goes to the log)."""
    records = run_mirror.local_records(manifest)
    mapped = [r for r in records if r.node_id is not None and r.node_id in taxonomy]
    if not mapped:
        raise ValueError(f"{manifest} has no record with a mapped label")
    if len(mapped) < len(records):
        log.warning("%s: %d of %d records have no label on the taxonomy; GRPO leaves them out",
                    manifest, len(records) - len(mapped), len(records))
    return mapped


class PromptStream:
    """Requests drawn in the order of `stream_indices(len(records), seed, cursor, ...)`."""

    def __init__(self, records: list, budget, mode: str, taxonomy, seed: int = 0,
                 include_system_prompt: bool = True, cursor: int = 0):
        """`records`: mapped records (`mapped_records`); `budget`: a `PromptBudget` built on the
        policy's processor; `mode`: the question format (rl.mode); `cursor`: the stream position
        to continue from (a checkpoint's)."""
        self.records, self.budget, self.mode, self.taxonomy = records, budget, mode, taxonomy
        self.seed, self.include_system_prompt, self.cursor = seed, include_system_prompt, cursor
        self.tokenizer = budget.processor.tokenizer
        # Multiple-choice distractors come from the same source dataset's label set.
        self.distractors: dict[str, list[str]] = {}
        for record in records:
            self.distractors.setdefault(record.source, []).append(record.node_id)

    def request(self, record, prompt_id: str) -> RolloutRequest:
        """The rollout request for one record: its question (the ground truth and the options in
        the metadata for scoring) and its image as the actors can read it."""
        from skinr1.prompts.questions import make_question

        question = make_question(
            self.tokenizer, record.record_id, record.image, record.node_id, self.mode, self.taxonomy,
            self.distractors[record.source], include_system_prompt=self.include_system_prompt, seed=self.seed,
        )
        metadata: dict[str, Any] = {"label": record.node_id, "options": [o.to_dict() for o in question.options],
                                    "record_id": record.record_id}
        return RolloutRequest(prompt_id, question.prompt, run_mirror.shipped_image(record.image), metadata)

    def next_requests(self, count: int) -> list[RolloutRequest]:
        """The next `count` requests of the stream; a record whose prompt cannot fit the engines'
        context is skipped (counted in the budget's `skipped`, named in the log), not sent."""
        requests, misses = [], 0
        while len(requests) < count:
            record = self.records[stream_indices(len(self.records), self.seed, self.cursor, 1)[0]]
            request = self.request(record, f"{self.cursor}:{record.record_id}")
            self.cursor += 1
            if self.budget.fits(record.record_id, request.prompt, record.image):
                requests.append(request)
                misses = 0
            elif (misses := misses + 1) >= len(self.records):
                raise ValueError(f"no record of the RL manifest fits max_model_len {self.budget.max_model_len} "
                                 f"(skipped: {len(self.budget.skipped)}); lower model.max_pixels or raise rl.rollout.max_model_len")
        return requests

    def probe_requests(self, count: int) -> list[RolloutRequest]:
        """The fixed probe prompts: the first `count` records of the manifest's own shuffle (seed + 1),
        the same for the whole run and apart from the stream's position; those that fit."""
        count = min(count, len(self.records))
        records = [self.records[i] for i in stream_indices(len(self.records), self.seed + 1, 0, count)]
        requests = [self.request(record, f"probe:{record.record_id}") for record in records]
        return [r for r, record in zip(requests, records) if self.budget.fits(record.record_id, r.prompt, record.image)]
