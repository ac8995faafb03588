"""The teacher writer: an LLM behind an OpenAI-compatible chat endpoint writes each trajectory.

The teacher sees the image (a base64 data URI), the correct diagnosis with its hierarchy path and
malignancy class, the retrieved textbook passages and the planned trajectory type/differential,
and must answer in the student's format. Its output is verified like any other writer's.

Robustness: requests run on a bounded thread pool; connection errors, timeouts, HTTP 429 and 5xx
are retried with exponential back-off and jitter (honouring Retry-After); every request has a
timeout; successful responses are cached on disk by request hash, so a re-run issues no requests.
A request that still fails becomes a counted reject, never an exception that stops the build.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from skinr1.trajectories.cache import ResponseCache, request_key
from skinr1.trajectories.config import TeacherConfig
from skinr1.trajectories.context import Context, Generation, Job
from skinr1.trajectories.kinds import KEEP_TYPES, SWITCH_TYPES

SYSTEM = (
    "You write worked examples of dermatological reasoning for training a student model. Each "
    "example must read as the student's own reasoning about the image: describe what is visible, "
    "walk the disease hierarchy from broad category to the specific disease, and weigh "
    "differentials as instructed. Use the textbook passages for facts; do not quote them at length."
)
KEEP_INSTRUCTION = (
    "Give {name} as your primary impression, compare it with the differential {x} using visible "
    "features, and keep {name}."
)
SWITCH_INSTRUCTION = (
    "Start from {x} as your first impression, notice what does not fit it, compare with {name} "
    "and switch to {name}."
)
# The random-DDx types read like their DDx counterparts: only how the differential was drawn differs.
TYPE_INSTRUCTIONS = {
    "direct": "Reason directly: visible features, then category, group and disease. Mention no differential.",
    **dict.fromkeys(KEEP_TYPES, KEEP_INSTRUCTION),
    **dict.fromkeys(SWITCH_TYPES, SWITCH_INSTRUCTION),
}


# --------------------------------------------------------------------------- prompt (pure)
def image_data_uri(path: str, max_side: int) -> str:
    """The image as a PNG data URI, downscaled to at most `max_side` pixels per side."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def teacher_instructions(job: Job, context: Context, max_passage_chars: int) -> str:
    taxonomy, plan = context.taxonomy, job.plan
    node_id = job.node_id
    name = taxonomy.node(node_id).name
    x = taxonomy.node(plan.differential).name if plan.differential else ""
    passages = "\n".join(
        f"[{r.rank}] {taxonomy.node(r.node_id).name} - {r.section} ({r.source}): {r.text[:max_passage_chars]}"
        for r in job.retrieved
    )
    example = context.fmt.render("...", name, taxonomy.malignancy(node_id))
    allowed = ", ".join(taxonomy.path_names(node_id)) + (f"; differential: {x}" if x else "")
    return (
        f"Correct diagnosis: {name} (malignancy class: {taxonomy.malignancy(node_id)}).\n"
        f"Hierarchy path: {' > '.join(taxonomy.path_names(node_id))}.\n"
        f"Task: {TYPE_INSTRUCTIONS[plan.trajectory_type].format(name=name, x=x)}\n"
        f"Name no disease, group or category other than: {allowed}.\n"
        f"Textbook passages:\n{passages or '(none)'}\n"
        f"Write 60-150 words of reasoning, then answer exactly in this format:\n{example}"
    )


def teacher_messages(job: Job, context: Context, image_uri: str, max_passage_chars: int) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_uri}},
                {"type": "text", "text": teacher_instructions(job, context, max_passage_chars)},
            ],
        },
    ]


# --------------------------------------------------------------------------- retry policy (pure)
def is_retryable(error: BaseException) -> bool:
    """Connection problems, timeouts, 429 and 5xx are transient; 4xx other than 429 are not."""
    import openai

    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return False


def error_code(error: BaseException) -> str:
    import openai

    if isinstance(error, openai.APITimeoutError):
        return "teacher_timeout"
    if isinstance(error, openai.APIConnectionError):
        return "teacher_connection_error"
    if isinstance(error, openai.APIStatusError):
        return f"teacher_http_{error.status_code}"
    return "teacher_bad_response"


def retry_after_seconds(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own back-off


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None, jitter: float = 1.0) -> float:
    """Delay before retry number `attempt` (0-based): base * 2^attempt scaled by jitter in [0.5, 1]."""
    if retry_after is not None:
        return min(cap, retry_after)
    return min(cap, base * (2**attempt)) * (0.5 + 0.5 * jitter)


# --------------------------------------------------------------------------- the writer
@dataclass
class TeacherStats:
    requests: int = 0
    """HTTP requests sent (retries included)."""
    cache_hits: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def fail(self, code: str) -> None:
        with self._lock:
            self.failures[code] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "retries": self.retries, "failures": dict(self.failures)}


def make_client(config: TeacherConfig):
    import openai

    return openai.OpenAI(
        base_url=config.base_url or os.environ.get("OPENAI_BASE_URL") or None,
        api_key=config.api_key or os.environ.get(config.api_key_env) or "EMPTY",
        max_retries=0,  # retries are ours: counted, with our back-off, and only for transient errors
        timeout=config.timeout_s,
    )


class TeacherWriter:
    name = "teacher"

    def __init__(
        self,
        context: Context,
        config: TeacherConfig,
        cache_dir: str,
        concurrency: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.context = context
        self.config = config
        self.cache = ResponseCache(cache_dir)
        self.concurrency = max(1, concurrency or config.concurrency)
        self.stats = TeacherStats()
        self._client = None
        self._client_lock = threading.Lock()
        self._sleep = sleep

    def client(self):
        with self._client_lock:  # created lazily: a fully cached run never needs the endpoint
            if self._client is None:
                self._client = make_client(self.config)
            return self._client

    def generate(self, jobs: Sequence[Job]) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher") as pool:
            return list(pool.map(self._one, jobs))

    def payload(self, job: Job) -> dict[str, Any]:
        uri = image_data_uri(job.record.image, self.config.image_max_side)
        return {
            "model": self.config.model,
            "messages": teacher_messages(job, self.context, uri, self.config.max_passage_chars),
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "seed": self.config.seed,
        }

    def _one(self, job: Job) -> Generation:
        try:
            payload = self.payload(job)
        except OSError as error:
            return Generation(None, "image_unreadable", str(error)[:200])
        key = request_key(payload)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add(cache_hits=1)
            return Generation(cached.get("completion") or "", cache_hit=True)
        completion, code, detail = self._request(payload)
        if completion is None:
            self.stats.fail(code)
            return Generation(None, code, detail)
        self.cache.put(key, {"model": self.config.model, "record_id": job.record.record_id, "completion": completion})
        return Generation(completion)

    def _request(self, payload: dict[str, Any]) -> tuple[str | None, str, str]:
        """(completion, "", "") or (None, error code, detail) after the allowed retries."""
        for attempt in range(self.config.max_retries + 1):
            self.stats.add(requests=1)
            try:
                response = self.client().chat.completions.create(**payload)
                return (response.choices[0].message.content or "").strip(), "", ""
            except Exception as error:  # noqa: BLE001 - classified below; nothing may escape a worker
                if not is_retryable(error) or attempt == self.config.max_retries:
                    return None, error_code(error), str(error)[:300]
                self.stats.add(retries=1)
                delay = backoff_delay(
                    attempt, self.config.backoff_s, self.config.max_backoff_s, retry_after_seconds(error), random.random()
                )
                self._sleep(delay)
        raise AssertionError("unreachable")
