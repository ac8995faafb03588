"""The Ray Serve application: a thin HTTP shell around `DiagnosisService`.

Each replica holds one vLLM engine. Requests are checked in this order: bearer token (401), content
type (415), declared and actual body size (413, counted while the body streams in, so an oversized
upload is never buffered whole), body shape (422), image validity (400/413), then generation.
Everything but the shell lives in pure modules (`requests`, `responses`, `openai_compat`).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException

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


def limited_request(request: Request, limit: int) -> Request:
    """The same request, whose body stream raises 413 as soon as more than `limit` bytes arrive."""
    received = 0
    receive = request.receive

    async def counting_receive():
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestError(413, f"request body exceeds the {limit}-byte limit")
        return message

    return Request(request.scope, receive=counting_receive)


@serve.deployment(name="SkinR1Policy", max_constructor_retry_count=1)
@serve.ingress(api)
class SkinR1Deployment:
    """One replica: a `DiagnosisService` (vLLM engine + policy) behind the HTTP routes."""

    def __init__(self, policy: ServedPolicy, config: ServeConfig, token_digest: str | None = None):
        from skinr1.serving.service import DiagnosisService

        self.config = config
        self.token_digest = token_digest
        self.service = DiagnosisService(policy, config)

    # ----------------------------------------------------------------- routes
    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        # Unauthenticated on purpose: load balancers and orchestrators probe it without secrets.
        healthy = not self.service.engine_errored
        body = {"status": "ok" if healthy else "unhealthy", "model": self.service.model_name,
                "policy_version": self.service.policy.policy_version}
        return JSONResponse(body, status_code=200 if healthy else 503)

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
        try:
            check_bearer(request.headers.get("authorization"), self.token_digest)
            kind = ""
            if accepted is not None:
                kind = body_kind(request.headers.get("content-type"), accepted)
                check_content_length(request.headers.get("content-length"), self.config.max_body_bytes)
                request = limited_request(request, self.config.max_body_bytes)
            return JSONResponse(await work(request, kind))
        except RequestError as error:
            return error_response(error.status, error.message)
        except Exception:
            logger.exception("request failed")
            if self.service.engine_errored:
                return error_response(503, "the inference engine is down; the replica is being replaced")
            return error_response(500, "internal error (logged on the server)")

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


def http_options(config: ServeConfig) -> dict[str, Any]:
    return {"host": config.host, "port": config.port, "request_timeout_s": config.request_timeout_s or None}


def start(config: ServeConfig, policy: ServedPolicy, token: str | None = None):
    """Start Serve's HTTP proxy on `config.host:port` and deploy the policy; returns the app handle.

    Ray must already be initialised (`skinr1.cluster.init_ray`). Blocks until every replica's engine
    is up; a replica whose engine fails to start fails the call with the replica's error.
    """
    from skinr1.serving.config import check_exposure
    from skinr1.serving.requests import token_digest

    check_exposure(config, token)
    serve.start(http_options=http_options(config))
    digest = token_digest(token) if token else None
    return serve.run(build_app(config, policy, digest), name=config.app_name, route_prefix="/")
