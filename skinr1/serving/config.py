"""`ServeConfig`: how the policy is served (HTTP, replicas, limits, auth, generation defaults).

Loaded like every SkinR1 config: defaults, then an optional YAML file, then `key=value` overrides
(`skinr1 serve --checkpoint DIR --config serve.yaml max_tokens=256 engine.max_model_len=4096`).
The engine section reuses `rollout.engine.EngineSettings`, so the served engine is built exactly
like the rollout and evaluation engines.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from typing import Mapping

from rollout.engine import EngineSettings
from skinr1.cluster import LOOPBACK
from skinr1.data.images import DEFAULT_MAX_PIXELS
from skinr1.prompts.format import MODES, OPTION_LETTERS

DEFAULT_TOKEN_ENV = "SKINR1_SERVE_TOKEN"


@dataclass
class ServeConfig:
    """Ray Serve application serving one SkinR1 policy."""

    host: str = LOOPBACK
    """Address the Serve HTTP proxy binds. Loopback by default; a non-loopback address needs a bearer
    token (see token_env) unless allow_unauthenticated is set."""
    port: int = 8000
    """HTTP port of the Serve proxy."""
    app_name: str = "skinr1"
    """Serve application name (several applications can share one cluster)."""
    model_name: str = ""
    """Name reported in responses and by /v1/models; empty: derived from the checkpoint path."""
    replicas: int = 1
    """Fixed number of replicas, each holding one vLLM engine (ignored when max_replicas > 0)."""
    min_replicas: int = 1
    """Autoscaling lower bound (used only when max_replicas > 0)."""
    max_replicas: int = 0
    """Autoscaling upper bound; 0 turns autoscaling off and runs `replicas` replicas."""
    target_ongoing_requests: float = 8.0
    """Autoscaling target of in-flight requests per replica. vLLM batches concurrent requests, so a
    replica is efficient with several in flight; lower it for latency, raise it for throughput."""
    max_ongoing_requests: int = 64
    """Requests one replica accepts at once (they are batched by vLLM); more wait in Serve's queue."""
    cpus_per_replica: float = 1.0
    """Logical CPUs Ray reserves per replica."""
    gpus_per_replica: float = 0.0
    """GPUs Ray reserves per replica (set to engine.tensor_parallel_size on GPU clusters)."""
    request_timeout_s: float = 0.0
    """End-to-end HTTP timeout enforced by the Serve proxy; 0 = none."""
    max_image_bytes: int = 10 * 1024 * 1024
    """Largest accepted image file (after base64 decoding); larger uploads get 413."""
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    """Largest stored image area (decompression-bomb cap); larger images get 413."""
    max_text_bytes: int = 256 * 1024
    """Room in a request body for everything but the image (JSON fields, chat messages)."""
    token_env: str = DEFAULT_TOKEN_ENV
    """Environment variable holding the bearer token. When it is set (non-empty) where the app is
    started, every endpoint except /healthz needs `Authorization: Bearer <token>`; only a SHA-256
    digest of it is handed to the replicas."""
    allow_unauthenticated: bool = False
    """Allow a non-loopback host without a bearer token."""
    mode: str = "open"
    """Default question mode of /v1/diagnose: "open" or "choice" (choice needs options)."""
    include_system_prompt: bool = True
    """Ask /v1/diagnose questions with the shared system prompt (as SFT taught)."""
    max_tokens: int = 1024
    """Default completion length (paper: 1024) and the most a request may ask for."""
    temperature: float = 0.0
    """Default sampling temperature of /v1/diagnose (0 = greedy, as in evaluation)."""
    max_choices: int = 4
    """Most completions (`n`) one chat-completions request may ask for."""
    log_engine_stats: bool = False
    """Let vLLM log throughput statistics periodically."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """vLLM engine settings (context length, KV cache, LoRA ranks, image pixel bounds...).
    LoRA is switched on automatically for adapter checkpoints; trust_remote_code stays off unless
    set here."""

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.max_replicas < 0 or self.min_replicas < 0:
            raise ValueError("min_replicas and max_replicas must be >= 0")
        if self.max_replicas and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.target_ongoing_requests <= 0 or self.max_ongoing_requests < 1:
            raise ValueError("target_ongoing_requests must be > 0 and max_ongoing_requests >= 1")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0 or self.request_timeout_s < 0:
            raise ValueError("cpus_per_replica, gpus_per_replica and request_timeout_s must be >= 0")
        if self.max_image_bytes < 1 or self.max_image_pixels < 1 or self.max_text_bytes < 1024:
            raise ValueError("max_image_bytes and max_image_pixels must be >= 1, max_text_bytes >= 1024")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_tokens < 1 or self.temperature < 0:
            raise ValueError("max_tokens must be >= 1 and temperature >= 0")
        if not 1 <= self.max_choices <= 16:
            raise ValueError(f"max_choices must be in 1..16, got {self.max_choices}")
        if not self.token_env:
            raise ValueError("token_env must name an environment variable")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > 0

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64-encoded maximal image plus the text allowance."""
        return math.ceil(self.max_image_bytes / 3) * 4 + self.max_text_bytes

    @property
    def max_options(self) -> int:
        return len(OPTION_LETTERS)


def resolve_token(config: ServeConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token from `config.token_env` (None when unset or blank: no auth)."""
    value = (os.environ if environ is None else environ).get(config.token_env, "").strip()
    return value or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(config: ServeConfig, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token, unless explicitly allowed."""
    if not is_loopback(config.host) and token is None and not config.allow_unauthenticated:
        raise ValueError(
            f"host {config.host!r} is reachable from other machines and no bearer token is set: export "
            f"{config.token_env}=<secret>, or pass allow_unauthenticated=true to serve without auth"
        )
