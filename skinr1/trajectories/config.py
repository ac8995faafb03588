"""`TrajectoriesConfig`: what `skinr1 trajectories` reads, writes and how it writes it.

Loaded with `skinr1.config.loader.load_config` (YAML + ``key=value`` overrides), e.g.
``skinr1 trajectories --config skinr1/configs/trajectories_demo.yaml writer=teacher teacher.concurrency=8``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import List

WRITERS = ("template", "teacher")


@dataclass
class TypeMix:
    """Share of each trajectory type (normalised to sum 1; assigned per record by a seeded hash)."""

    direct: float = 0.4
    """Rule -> diagnosis with its place in the hierarchy, no differential."""
    ddx_keep: float = 0.3
    """Primary diagnosis, compared with a DDx neighbour, primary kept."""
    ddx_switch: float = 0.3
    """A DDx neighbour as first impression, compared, switched to the correct diagnosis."""
    random_ddx_keep: float = 0.0
    """Like ddx_keep, but the differential is drawn at random from diseases outside the DDx
    neighbourhood, preferring ones the knowledge base describes as the DDx pick does (the paper's
    random-DDx keep). 0 = never."""
    random_ddx_switch: float = 0.0
    """Like ddx_switch, but the first impression is a random disease outside the DDx neighbourhood
    (the paper's random-DDx switch). 0 = never."""

    def __post_init__(self) -> None:
        shares = self._shares()
        bad = [f"types.{k}={v!r}" for k, v in shares.items() if not math.isfinite(v) or v < 0]
        if bad:
            raise ValueError(f"types: shares must be finite and >= 0, got {', '.join(bad)}")
        if sum(shares.values()) <= 0:
            raise ValueError(f"types: shares must not all be 0, got {shares}")

    def _shares(self) -> dict[str, float]:
        # The field names are the type names (kinds.TRAJECTORY_TYPES); a test keeps them in step.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, float]:
        shares = self._shares()
        total = sum(shares.values())
        return {kind: share / total for kind, share in shares.items()}


@dataclass
class TeacherConfig:
    """The teacher LLM behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, ...)."""

    base_url: str = ""
    """Endpoint root, e.g. http://127.0.0.1:8000/v1. Empty: $OPENAI_BASE_URL, else OpenAI's."""
    api_key: str = ""
    """API key. Empty: read the variable named by `api_key_env` (keep secrets out of config files)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key when `api_key` is empty ("EMPTY" is sent if it is unset)."""
    model: str = "gpt-4.1"
    """Model name as the endpoint knows it (for vLLM: the served model name or path)."""
    temperature: float = 0.7
    """Sampling temperature."""
    max_tokens: int = 512
    """Longest completion requested."""
    seed: int = 0
    """Sampling seed sent with each request (part of the cache key)."""
    concurrency: int = 4
    """Requests in flight at once, over all workers (each Ray task gets its share, at least 1)."""
    timeout_s: float = 60.0
    """Per-request timeout in seconds."""
    max_retries: int = 4
    """Retries after a connection error, timeout, HTTP 429 or 5xx (other errors are not retried)."""
    backoff_s: float = 1.0
    """First retry delay; doubles per retry (with jitter), capped by `max_backoff_s`."""
    max_backoff_s: float = 30.0
    """Longest delay between two tries (a server's Retry-After is honoured up to this)."""
    cache_dir: str = ""
    """Response cache, one JSON file per request hash. Empty: <output_dir>/teacher_cache."""
    image_max_side: int = 448
    """Images are downscaled to at most this many pixels per side before sending (paper: 448)."""
    max_passage_chars: int = 800
    """Each retrieved passage is cut to this many characters in the prompt (bounds prompt length)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_tokens < 1 or self.max_retries < 0:
            raise ValueError("teacher: concurrency and max_tokens must be >= 1, max_retries >= 0")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.image_max_side < 28 or self.max_passage_chars < 1:
            raise ValueError("teacher: timeout_s must be > 0, back-offs >= 0, image_max_side >= 28, max_passage_chars >= 1")


@dataclass
class VerifyConfig:
    """How completions are checked before they enter the SFT set."""

    morphology_terms: List[str] = field(
        default_factory=lambda: [
            "ulcer", "ulceration", "scar", "telangiectasia", "telangiectases", "telangiectasis",
            "milia", "milium", "hyperpigmentation", "hypopigmentation",
        ]
    )
    """Taxonomy names that reasoning uses as morphology words ("milia-like cysts", "ulceration");
    they are not read as diagnoses when looking for hierarchy statements and differentials."""


@dataclass
class TrajectoriesConfig:
    """`skinr1 trajectories`: build a verified SFT set of reasoning trajectories from a manifest."""

    input: str = ""
    """Input manifest (JSONL of skinr1 Records, e.g. the synthetic demo's dense.jsonl). Required."""
    output_dir: str = ""
    """Where sft.jsonl, rejects.jsonl, report.json, report.txt and config.yaml are written. Required."""
    writer: str = "template"
    """"template" (deterministic, offline) or "teacher" (an LLM; see `teacher`)."""
    types: TypeMix = field(default_factory=TypeMix)
    """Proportions of the trajectory types."""
    seed: int = 0
    """Seed for type assignment, differential choice and template wording (hashed with record ids)."""
    knowledge_dir: str = ""
    """Knowledge base: a directory of .md files or a .jsonl file. Empty: the shipped skinr1/knowledge."""
    top_k: int = 4
    """Passages retrieved per record (kept in metadata; given to the teacher)."""
    include_system_prompt: bool = True
    """Put the shared system prompt (skinr1.prompts) first in each SFT conversation."""
    limit: int = 0
    """Use only the first N records of the manifest (0 = all)."""
    max_per_diagnosis_per_type: int = 0
    """At most this many trajectories per (diagnosis, trajectory type); the paper: 5. 0 = no cap.
    Records over a cap are dropped before writing (no teacher request), as rejects with reason
    "capped_per_diagnosis_type"; which ones is a seeded hash of the record id, not file order."""
    max_per_type: int = 0
    """At most this many trajectories per trajectory type; the paper: 1000. 0 = no cap. Applied
    like `max_per_diagnosis_per_type` (reject reason "capped_per_type")."""
    num_workers: int = 1
    """Ray tasks processing chunks in parallel; 1 = in this process unless the set is large."""
    parallel_threshold: int = 20000
    """With num_workers=1, manifests with at least this many records still go to Ray (all CPUs)."""
    chunk_size: int = 0
    """Records per Ray task (0 = split evenly into about 4 chunks per worker)."""
    reasoning_tag: str = "thinking"
    """Reasoning tag (see skinr1.prompts.AnswerFormat)."""
    answer_tag: str = "final diagnosis"
    """Answer tag (see skinr1.prompts.AnswerFormat)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """Teacher-LLM settings (used when writer=teacher)."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """Verification settings."""

    def __post_init__(self) -> None:
        if self.writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {self.writer!r}")
        if self.top_k < 0 or self.limit < 0 or self.num_workers < 1 or self.chunk_size < 0:
            raise ValueError("top_k, limit and chunk_size must be >= 0 and num_workers >= 1")
        if self.parallel_threshold < 1:
            raise ValueError("parallel_threshold must be >= 1")
        for name in ("max_per_diagnosis_per_type", "max_per_type"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = no cap), got {value!r}")

    def check_paths(self) -> None:
        """Called before running (not at construction, so configs can be built and overridden first)."""
        if not self.input:
            raise ValueError("input is required (a JSONL manifest of records)")
        if not self.output_dir:
            raise ValueError("output_dir is required")
