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
    request_timeout_s: float = 300.0
    """Longest a request may take end to end (body, decoding, generation); it gets 408 after that.
    Enforced by the replica itself, so a client header (`x-request-timeout-seconds`) can neither
    switch it off nor extend it. Raise it for long completions on slow hardware."""
    body_timeout_s: float = 30.0
    """Longest the whole request body may take to arrive; a slower client gets 408 and frees its
    replica slot (a client trickling bytes must not hold a slot for ever)."""
    max_drain_bytes: int = 128 * 1024 * 1024
    """Before answering 413, the server reads and discards up to this much of the oversized body
    (within body_timeout_s), so that clients that send the whole body before reading the reply
    (Python's urllib) see the 413 instead of a connection reset."""
    keep_alive_timeout_s: int = 5
    """Seconds the HTTP proxy keeps an idle client connection open."""
    ssl_certfile: str = ""
    """PEM certificate (chain) for HTTPS; with ssl_keyfile, the proxy serves only HTTPS."""
    ssl_keyfile: str = ""
    """PEM private key of ssl_certfile."""
    max_image_bytes: int = 10 * 1024 * 1024
    """Largest accepted image file (after base64 decoding); larger uploads get 413."""
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    """Largest stored image area (decompression-bomb cap); larger images get 413."""
    decode_concurrency: int = 0
    """Large images (above 2048x2048) one replica decodes at once, each in a worker process of its
    own; further ones wait. 0: as many as the CPUs reserved per replica (cpus_per_replica, at least 1)."""
    decode_nice: int = 19
    """Nice value (0-19) of those worker processes: 19 gives them only the CPU that the engine and
    small requests leave, so large uploads wait rather than slow everyone else down."""
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
        errors = settings_errors(self)
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas > 0

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64-encoded maximal image plus the text allowance."""
        return math.ceil(self.max_image_bytes / 3) * 4 + self.max_text_bytes

    @property
    def replica_decode_concurrency(self) -> int:
        """What a replica applies (`decode_concurrency`, or derived from cpus_per_replica)."""
        return self.decode_concurrency or max(1, int(self.cpus_per_replica))

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"

    @property
    def max_options(self) -> int:
        return len(OPTION_LETTERS)


def settings_errors(config: ServeConfig) -> list[str]:
    """Every invalid setting of `config`, each message naming its key (pure, unit-tested)."""
    errors: list[str] = []

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            errors.append(f"{key} must be {rule}, got {getattr(config, key)!r}")

    need(bool(config.host.strip()), "host", "a non-empty address")
    need(0 < config.port < 65536, "port", "in 1..65535")
    need(bool(config.app_name.strip()), "app_name", "non-empty")
    need(config.replicas >= 1, "replicas", ">= 1")
    need(config.min_replicas >= 0, "min_replicas", ">= 0")
    need(config.max_replicas >= 0, "max_replicas", ">= 0 (0 turns autoscaling off)")
    if config.max_replicas and config.min_replicas > config.max_replicas:
        errors.append(f"min_replicas ({config.min_replicas}) must not exceed max_replicas ({config.max_replicas})")
    need(_positive(config.target_ongoing_requests), "target_ongoing_requests", "> 0")
    need(config.max_ongoing_requests >= 1, "max_ongoing_requests", ">= 1")
    need(config.cpus_per_replica >= 0, "cpus_per_replica", ">= 0")
    need(config.gpus_per_replica >= 0, "gpus_per_replica", ">= 0")
    need(_positive(config.request_timeout_s), "request_timeout_s", "> 0 seconds")
    need(_positive(config.body_timeout_s), "body_timeout_s", "> 0 seconds")
    if _positive(config.body_timeout_s) and _positive(config.request_timeout_s):
        need(config.body_timeout_s <= config.request_timeout_s, "body_timeout_s", "<= request_timeout_s")
    need(config.keep_alive_timeout_s >= 1, "keep_alive_timeout_s", ">= 1 second")
    need(config.max_image_bytes >= 1, "max_image_bytes", ">= 1")
    need(config.max_image_pixels >= 1, "max_image_pixels", ">= 1")
    need(config.max_text_bytes >= 1024, "max_text_bytes", ">= 1024")
    need(isinstance(config.decode_concurrency, int) and config.decode_concurrency >= 0, "decode_concurrency",
         "an integer >= 0 (0: from cpus_per_replica)")
    need(isinstance(config.decode_nice, int) and 0 <= config.decode_nice <= 19, "decode_nice", "an integer in 0..19")
    need(config.max_drain_bytes >= 0, "max_drain_bytes", ">= 0")
    need(bool(config.ssl_certfile) == bool(config.ssl_keyfile), "ssl_keyfile",
         "set together with ssl_certfile (HTTPS needs both)")
    for key in ("ssl_certfile", "ssl_keyfile"):
        path = getattr(config, key)
        need(not path or os.path.isfile(path), key, "an existing file")
    need(bool(config.token_env.strip()), "token_env", "the name of an environment variable")
    need(config.mode in MODES, "mode", f"one of {', '.join(MODES)}")
    need(config.max_tokens >= 1, "max_tokens", ">= 1")
    need(_finite(config.temperature) and config.temperature >= 0, "temperature", ">= 0")
    need(1 <= config.max_choices <= 16, "max_choices", "in 1..16")
    if config.engine.engine_core_in_process:
        # vLLM's async engine always runs its core in processes of its own; the in-process core is
        # only for `vllm.LLM` in a process serving one engine (a rollout actor).
        errors.append("engine.engine_core_in_process must be false: a served engine (vLLM's AsyncLLMEngine) "
                      "always runs its engine core in a process of its own")
    return errors


def _positive(value: float) -> bool:
    return _finite(value) and value > 0


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


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
