"""The Ray Serve application: a thin HTTP shell around `DiagnosisService`.

Each replica holds one vLLM engine. Requests are checked in this order: bearer token (401), content
type (415), declared and actual body size (413, counted while the body streams in, so an oversized
upload is never buffered whole), body shape (422), image validity (400/413), then generation.
The replica enforces its own deadlines: the body must arrive within `body_timeout_s` and the whole
request finish within `request_timeout_s` (408), whatever timeout headers the client sends to
Serve's proxy. `/healthz` is a separate, cheap application, so that slow or numerous clients
holding every replica slot cannot make an orchestrator believe the service is dead.
Everything but the shell lives in pure modules (`requests`, `responses`, `openai_compat`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from skinr1.serving.config import ServeConfig
from skinr1.serving.openai_compat import models_body, parse_chat_request
from skinr1.serving.policy import ServedPolicy
from skinr1.serving.requests import (
    JSON,
    MULTIPART,
    RequestError,
    body_kind,
    check_bearer,
    check_content_length,
    diagnose_from_form,
    diagnose_from_json,
    parse_json_object,
)
from skinr1.serving.responses import error_body

logger = logging.getLogger("ray.serve")

# No interactive docs or schema endpoints: less surface on an authenticated medical API.
api = FastAPI(title="SkinR1", docs_url=None, redoc_url=None, openapi_url=None)


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


class BodyStream:
    """A request's ASGI body stream with a size limit and a deadline.

    Past `limit` bytes it raises 413, past `deadline` (event-loop time) 408, so a client can neither
    make the replica buffer an oversized body nor hold a replica slot by trickling bytes.
    """

    def __init__(self, receive: Callable[[], Awaitable[dict]], limit: int, deadline: float, timeout_s: float):
        self._receive = receive
        self.limit = limit
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.received = 0
        self.complete = False

    async def _next(self) -> dict:
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self._receive(), timeout=max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise RequestError(408, f"the request body did not arrive within {self.timeout_s:g}s") from None

    async def __call__(self) -> dict:
        message = await self._next()
        if message.get("type") == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.limit:
                raise RequestError(413, f"request body exceeds the {self.limit}-byte limit")
        else:
            self.complete = True  # http.disconnect: nothing more will come
        return message

    async def drain(self, max_bytes: int) -> bool:
        """Read and discard the rest of the body (at most `max_bytes` more, before the deadline), so
        that a client still sending it reads our error instead of a connection reset. True when the
        whole body was consumed."""
        drained = 0
        try:
            while not self.complete and drained <= max_bytes:
                message = await self._next()
                if message.get("type") != "http.request":
                    return False
                drained += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)
        except RequestError:
            return False
        return self.complete


def limited_request(request: Request, limit: int, timeout_s: float = float("inf")) -> tuple[Request, BodyStream]:
    """The same request, reading its body through a `BodyStream` (413 above `limit` bytes, 408 after
    `timeout_s` seconds), and that stream."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    stream = BodyStream(request.receive, limit, deadline, timeout_s)
    return Request(request.scope, receive=stream), stream


def bind_replica_grpc_to_node_address() -> None:
    """Bind this replica's inter-deployment gRPC server to the node's Ray address, not every interface.

    Serve starts that server on "[::]:0" and has no setting for the address; its routers dial the
    replica at the node's Ray address (127.0.0.1 on a local node), so binding there loses nothing
    and keeps a laptop's replica unreachable from the network. Must run in the replica's
    constructor: Serve starts the server right after it.
    """
    import ray
    from ray.serve._private import replica as replica_module

    original = replica_module.add_port_to_grpc_server
    if getattr(original, "binds_node_address", False):
        return
    host = ray.util.get_node_ip_address()
    bracketed = f"[{host}]" if ":" in host else host

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{bracketed}:{address[len('[::]:'):]}"
        return original(server, address)

    add_port.binds_node_address = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = add_port


@serve.deployment(name="SkinR1Policy", max_constructor_retry_count=1)
@serve.ingress(api)
class SkinR1Deployment:
    """One replica: a `DiagnosisService` (vLLM engine + policy) behind the HTTP routes."""

    def __init__(self, policy: ServedPolicy, config: ServeConfig, token_digest: str | None = None):
        from skinr1.serving.service import DiagnosisService

        bind_replica_grpc_to_node_address()
        self.config = config
        self.token_digest = token_digest
        self.service = DiagnosisService(policy, config)

    # ----------------------------------------------------------------- routes (/healthz: HealthProbe)
    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        return await self._handle(request, None, self._models)

    @api.post("/v1/diagnose")
    async def diagnose(self, request: Request) -> JSONResponse:
        return await self._handle(request, (JSON, MULTIPART), self._diagnose)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> JSONResponse:
        return await self._handle(request, (JSON,), self._chat)

    # ----------------------------------------------------------------- handlers
    async def _handle(self, request: Request, accepted: tuple[str, ...] | None,
                      work: Callable[[Request, str], Awaitable[dict[str, Any]]]) -> JSONResponse:
        config = self.config
        stream = None
        try:
            # The replica's own deadline: Serve's proxy lets a client header switch its timeout off.
            async with asyncio.timeout(config.request_timeout_s):
                check_bearer(request.headers.get("authorization"), self.token_digest)
                kind = ""
                if accepted is not None:
                    kind = body_kind(request.headers.get("content-type"), accepted)
                    request, stream = limited_request(request, config.max_body_bytes, config.body_timeout_s)
                    check_content_length(request.headers.get("content-length"), config.max_body_bytes)
                return JSONResponse(await work(request, kind))
        except RequestError as error:
            if error.status == 413 and stream is not None:
                await self._drain(request, stream)
            return error_response(error.status, error.message)
        except ClientDisconnect:
            return error_response(400, "the client disconnected before sending the whole body")
        except TimeoutError:
            return error_response(408, f"the request took longer than {config.request_timeout_s:g}s")
        except Exception:
            logger.exception("request failed")
            if self.service.engine_errored:
                return error_response(503, "the inference engine is down; the replica is being replaced")
            return error_response(500, "internal error (logged on the server)")

    async def _drain(self, request: Request, stream: BodyStream) -> None:
        """Consume a refused body (bounded) so that clients that write it all before reading see the 413."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > stream.received + self.config.max_drain_bytes:
            return  # too big to drain: the client gets the 413 only if it reads while sending
        await stream.drain(self.config.max_drain_bytes)

    async def _models(self, request: Request, kind: str) -> dict[str, Any]:
        return models_body(self.service.model_name)

    async def _diagnose(self, request: Request, kind: str) -> dict[str, Any]:
        config = self.config
        limits = dict(max_image_bytes=config.max_image_bytes, default_mode=config.mode,
                      max_options=config.max_options, max_tokens_limit=config.max_tokens)
        if kind == JSON:
            parsed = diagnose_from_json(parse_json_object(await request.body()), **limits)
        else:
            try:
                form = await request.form(max_files=1, max_fields=16, max_part_size=config.max_text_bytes)
            except HTTPException as error:  # starlette's verdict on a broken multipart body
                raise RequestError(422, f"malformed multipart body: {error.detail}") from None
            try:
                fields: dict[str, list[str]] = {}
                upload = None
                for name, value in form.multi_items():
                    if isinstance(value, str):
                        fields.setdefault(name, []).append(value)
                    elif name == "image" and upload is None:
                        upload = (value.content_type or "", await value.read(config.max_image_bytes + 1))
                    else:
                        raise RequestError(422, f"unexpected file part {name!r}; send the image as 'image'")
                parsed = diagnose_from_form(fields, upload, **limits)
            finally:
                await form.close()
        return await self.service.diagnose(parsed)

    async def _chat(self, request: Request, kind: str) -> dict[str, Any]:
        config = self.config
        chat = parse_chat_request(
            parse_json_object(await request.body()),
            max_image_bytes=config.max_image_bytes,
            max_images=self.service.settings.max_images_per_prompt,
            max_tokens_limit=config.max_tokens,
            default_max_tokens=config.max_tokens,
            max_choices=config.max_choices,
        )
        return await self.service.chat(chat)

    # ----------------------------------------------------------------- lifecycle
    async def check_health(self) -> None:
        """Serve's periodic probe: a dead engine makes the controller replace the replica."""
        await self.service.check_health()

    def __del__(self) -> None:
        service = getattr(self, "service", None)
        if service is not None:
            service.shutdown()


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Replica count or autoscaling, resources and concurrency for `SkinR1Deployment.options`."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        "max_ongoing_requests": config.max_ongoing_requests,
    }
    if config.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas,
            "initial_replicas": max(config.min_replicas, 1),
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = config.replicas
    return options


def build_app(config: ServeConfig, policy: ServedPolicy, token_digest: str | None = None):
    """The bound Serve application (pass to `serve.run`)."""
    return SkinR1Deployment.options(**deployment_options(config)).bind(policy, config, token_digest)


HEALTHY_STATES = frozenset({"HEALTHY", "UPSCALING", "DOWNSCALING"})
"""Deployment states in which the policy answers requests (autoscaling keeps it serving)."""
HEALTH_APP_SUFFIX = "-health"


@serve.deployment(name="SkinR1Health", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class HealthProbe:
    """`GET /healthz`, unauthenticated on purpose (load balancers probe it without secrets).

    A deployment of its own, so it answers while every policy replica slot is taken. It reports
    what Serve's controller knows from the replicas' periodic `check_health` (a dead engine fails
    it), read at most once a second.
    """

    def __init__(self, app_name: str, model: str, policy_version: int, refresh_s: float = 1.0):
        bind_replica_grpc_to_node_address()
        self.app_name = app_name
        self.body = {"model": model, "policy_version": policy_version}
        self.refresh_s = refresh_s
        self._checked_at = -float("inf")
        self._healthy = False

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "use GET /healthz")
        healthy = await self.healthy()
        return JSONResponse({"status": "ok" if healthy else "unhealthy", **self.body},
                            status_code=200 if healthy else 503)

    async def healthy(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.refresh_s:
            self._checked_at = now
            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(self.app_name)
            deployment = app.deployments.get(SkinR1Deployment.name) if app is not None else None
            state = getattr(deployment, "status", None)
            self._healthy = getattr(state, "value", state) in HEALTHY_STATES
        return self._healthy


def health_app_name(config: ServeConfig) -> str:
    return config.app_name + HEALTH_APP_SUFFIX


def http_options(config: ServeConfig) -> dict[str, Any]:
    """Serve's proxy settings. Its timeout is a backstop a few seconds after the replica's own."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "request_timeout_s": config.request_timeout_s + 5.0,
        "keep_alive_timeout_s": config.keep_alive_timeout_s,
    }
    if config.ssl_certfile:
        options.update(ssl_certfile=config.ssl_certfile, ssl_keyfile=config.ssl_keyfile)
    return options


def start(config: ServeConfig, policy: ServedPolicy, token: str | None = None):
    """Start Serve's HTTP proxy on `config.host:port` and deploy the policy; returns the app handle.

    Ray must already be initialised (`skinr1.cluster.init_ray`). Blocks until every replica's engine
    is up; a replica whose engine fails to start fails the call with the replica's error. Only the
    token's digest is handed to Ray.
    """
    from skinr1.serving.config import check_exposure
    from skinr1.serving.requests import token_digest

    check_exposure(config, token)
    serve.start(http_options=http_options(config))
    digest = token_digest(token) if token else None
    handle = serve.run(build_app(config, policy, digest), name=config.app_name, route_prefix="/")
    serve.run(HealthProbe.bind(config.app_name, policy.name, policy.policy_version),
              name=health_app_name(config), route_prefix="/healthz")
    return handle


def stop(config: ServeConfig) -> None:
    """Remove the policy's applications (Serve itself keeps running)."""
    serve.delete(health_app_name(config))
    serve.delete(config.app_name)
