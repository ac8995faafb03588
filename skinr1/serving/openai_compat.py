"""The OpenAI chat-completions schema, as pure functions: request -> chat messages, result -> body.

Images arrive as `image_url` parts holding `data:image/...;base64,` URIs (OpenAI's inline form).
Remote URLs are refused: the server never fetches anything on a client's behalf. Messages are
turned into the Hugging Face chat format (`{"type": "image"}` placeholders) and rendered with the
checkpoint's own chat template, as everywhere else in SkinR1. Unknown optional fields are ignored
so that existing clients work; fields whose meaning we would silently change are refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from skinr1.serving.requests import RequestError, decode_base64_image

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatInput:
    """A validated chat-completions request."""

    messages: list[dict[str, Any]]
    """Hugging Face chat messages; each image is a `{"type": "image"}` part."""
    images: tuple[bytes, ...] = ()
    """Undecoded image bytes, in message order."""
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None


def _number(data: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(422, f"{key} must be a number in [{low}, {high}]")
    return float(value)


def _integer(data: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(422, f"{key} must be an integer in {low}..{high}")
    return value


def _content_parts(content: Any, index: int, max_image_bytes: int, images: list[bytes]) -> list[dict[str, Any]] | str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(422, f"messages[{index}].content must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{index}].content[{number}]"
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(422, f"{where}.text must be a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise RequestError(422, f"{where}.image_url.url must be a string")
            if not url.lower().startswith("data:"):
                raise RequestError(400, f"{where}: only data: URIs are accepted (the server fetches no URLs)")
            images.append(decode_base64_image(url, max_image_bytes, field_name=f"{where}.image_url"))
            parts.append({"type": "image"})
        else:
            raise RequestError(422, f"{where}: unsupported part type {kind!r} (text and image_url are)")
    return parts


def parse_chat_request(data: Mapping[str, Any], *, max_image_bytes: int, max_images: int, max_tokens_limit: int,
                       default_max_tokens: int, max_choices: int) -> ChatInput:
    """Validate an OpenAI chat-completions body (422 for a malformed one, 400/413/415 for images)."""
    if data.get("stream"):
        raise RequestError(400, "streaming is not supported; send stream=false")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, "messages must be a non-empty list")
    images: list[bytes] = []
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(422, f"messages[{index}] must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(422, f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}")
        converted.append({"role": role, "content": _content_parts(message.get("content"), index, max_image_bytes, images)})
    if len(images) > max_images:
        raise RequestError(422, f"at most {max_images} image(s) per request, got {len(images)}")
    if converted[-1]["role"] == "assistant":
        raise RequestError(422, "the last message must not be the assistant's (nothing to complete)")
    # `max_completion_tokens` is the newer name of `max_tokens`.
    token_key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    return ChatInput(
        messages=converted,
        images=tuple(images),
        max_tokens=_integer(data, token_key, default_max_tokens, 1, max_tokens_limit),
        temperature=_number(data, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(data, "top_p", 1.0, 1e-6, 1.0),
        n=_integer(data, "n", 1, 1, max_choices),
        seed=_integer(data, "seed", None, -(2**63), 2**63 - 1),
    )


def chat_completion_body(request_id: str, model: str, texts: Sequence[str], finish_reasons: Sequence[str | None],
                         prompt_tokens: int, completion_tokens: int, policy_version: int,
                         created: int | None = None) -> dict[str, Any]:
    """A `chat.completion` object (plus `policy_version`, which OpenAI clients ignore)."""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": _finish_reason(reason),
            }
            for index, (text, reason) in enumerate(zip(texts, finish_reasons))
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "policy_version": policy_version,
    }


def _finish_reason(reason: str | None) -> str:
    # vLLM says "stop" / "length" / "abort"; OpenAI clients know "stop" and "length".
    return "length" if reason == "length" else "stop"


def models_body(model: str, created: int = 0) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "skinr1"}]}
