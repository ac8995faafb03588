"""Request validation as pure functions: content types, sizes, auth, JSON/form fields, images.

Every rejection is a `RequestError` carrying the HTTP status the client gets:

* 400: the image is corrupt or not an image (the project's validator, `skinr1.data.images`);
* 401: a bearer token is required and missing or wrong;
* 413: body, image file or image area above the configured limits;
* 415: the request (or the uploaded part, or a data URI) has the wrong content type;
* 422: the body is malformed (bad JSON, missing or mistyped fields, bad base64, unknown options).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from skinr1.data.images import ImageError, load_image
from skinr1.prompts.format import MODES

JSON = "application/json"
MULTIPART = "multipart/form-data"
# Uploads whose part carries no useful type: browsers and curl send octet-stream for unknown files.
NEUTRAL_PART_TYPES = frozenset({"", "application/octet-stream"})
# Image-kind errors that mean "too big" rather than "broken".
TOO_LARGE_KINDS = frozenset({"file_too_large", "decompression_bomb"})
# Qwen2.5-VL's image processor refuses images whose long side is >= 200 times the short side.
MAX_ASPECT_RATIO = 200
_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.IGNORECASE)


class RequestError(Exception):
    """A request the server rejects; `status` is the HTTP status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __reduce__(self):
        # Raised in a decoding process and re-raised in the replica: pickle both fields.
        return type(self), (self.status, self.message)


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded image may be (from ServeConfig and the engine's pixel bounds)."""

    max_bytes: int
    max_pixels: int
    resize_min_pixels: int | None = None
    resize_max_pixels: int | None = None


@dataclass(frozen=True)
class DiagnoseInput:
    """A validated /v1/diagnose request (the image is still undecoded bytes)."""

    image: bytes
    mode: str
    options: tuple[str, ...] = ()
    max_tokens: int | None = None


# --------------------------------------------------------------------------- headers
def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header, lower-case ("" when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def body_kind(content_type: str | None, accepted: Sequence[str] = (JSON, MULTIPART)) -> str:
    """The accepted media type of the request, or 415."""
    kind = media_type(content_type)
    if kind not in accepted:
        shown = kind or "no content type"
        raise RequestError(415, f"unsupported content type {shown!r}; send {' or '.join(accepted)}")
    return kind


def check_content_length(header: str | None, limit: int) -> None:
    """Reject a declared body above `limit` before reading it (the reader enforces it again)."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise RequestError(400, f"invalid Content-Length {header!r}") from None
    if length > limit:
        raise RequestError(413, f"request body of {length} bytes exceeds the {limit}-byte limit")


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a bearer token: replicas keep only this, never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_bearer(authorization: str | None, expected_digest: str | None) -> None:
    """401 unless `Authorization: Bearer <token>` matches (no check when no token is configured)."""
    if expected_digest is None:
        return
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RequestError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    # Constant-time comparison of digests: timing reveals nothing about the token.
    if not hmac.compare_digest(token_digest(token.strip()), expected_digest):
        raise RequestError(401, "invalid bearer token")


# --------------------------------------------------------------------------- bodies
def load_json(text: bytes | str, what: str = "JSON body") -> Any:
    """`json.loads` whose every failure is a 422 naming the problem, including input built to break
    the parser: nesting deeper than Python's recursion limit (RecursionError) and integers above
    Python's int-conversion digit limit (ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(422, f"malformed {what}: arrays/objects nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(422, f"malformed {what}: {error}") from None
    except ValueError as error:  # int("9" * 5000): "Exceeds the limit (4300 digits) ..."
        raise RequestError(422, f"malformed {what}: a number has too many digits ({error})") from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise RequestError(422, "the JSON body must be an object")
    return data


def decode_base64_image(value: Any, max_bytes: int, field_name: str = "image") -> bytes:
    """Bytes of a base64 image, bare or as a `data:image/...;base64,` URI; 413 above `max_bytes`."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(422, f"{field_name!r} must be a non-empty base64 string or data URI")
    text = value.strip()
    if text[:5].lower() == "data:":
        match = _DATA_URI.match(text)
        if match is None:
            raise RequestError(422, f"{field_name!r} is a data URI but not a base64 one")
        declared = (match.group("type") or "").lower()
        if declared and not declared.startswith("image/") and declared not in NEUTRAL_PART_TYPES:
            raise RequestError(415, f"{field_name!r} declares content type {declared!r}; expected image/*")
        text = text[match.end():]
    # Reject before decoding: 4 base64 characters carry 3 bytes.
    if (len(text) // 4) * 3 > max_bytes + 3:
        raise RequestError(413, f"{field_name!r} exceeds the {max_bytes}-byte image limit")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(422, f"{field_name!r} is not valid base64: {error}") from None
    if len(data) > max_bytes:
        raise RequestError(413, f"image of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    return data


def _mode_and_options(mode: Any, options: Any, default_mode: str, max_options: int) -> tuple[str, tuple[str, ...]]:
    mode = default_mode if mode in (None, "") else mode
    if mode not in MODES:
        raise RequestError(422, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if options in (None, "", []):
        options = ()
    if isinstance(options, str):
        raise RequestError(422, "options must be a list of diagnosis names")
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) and o.strip() for o in options):
        raise RequestError(422, "options must be a list of non-empty strings")
    if mode == "choice" and not 2 <= len(options) <= max_options:
        raise RequestError(422, f"choice mode needs 2 to {max_options} options, got {len(options)}")
    if mode == "open" and options:
        raise RequestError(422, "options are only used in choice mode (set mode to 'choice')")
    return mode, tuple(o.strip() for o in options)


def _max_tokens(value: Any, limit: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise RequestError(422, f"max_tokens must be an integer in 1..{limit}")
    return value


def diagnose_from_json(data: Mapping[str, Any], max_image_bytes: int, default_mode: str, max_options: int,
                       max_tokens_limit: int) -> DiagnoseInput:
    """`{"image": base64 | data URI, "mode": "open"|"choice", "options": [...], "max_tokens": N}`."""
    unknown = sorted(set(data) - {"image", "mode", "options", "max_tokens"})
    if unknown:
        raise RequestError(422, f"unknown fields: {', '.join(unknown)}")
    if "image" not in data:
        raise RequestError(422, "missing field 'image' (base64 string or data URI)")
    image = decode_base64_image(data["image"], max_image_bytes)
    mode, options = _mode_and_options(data.get("mode"), data.get("options"), default_mode, max_options)
    return DiagnoseInput(image, mode, options, _max_tokens(data.get("max_tokens"), max_tokens_limit))


def form_options(values: Sequence[str]) -> list[str]:
    """Options from a form: repeated `options` fields, or one field holding a JSON list."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        parsed = load_json(values[0], "options (a JSON list)")
        if not isinstance(parsed, list):
            raise RequestError(422, "options must be a JSON list")
        return parsed
    return list(values)


def diagnose_from_form(fields: Mapping[str, Sequence[str]], file: tuple[str, bytes] | None, max_image_bytes: int,
                       default_mode: str, max_options: int, max_tokens_limit: int) -> DiagnoseInput:
    """A multipart upload: `file` is (part content type, bytes) of the `image` part, or None."""
    unknown = sorted(set(fields) - {"mode", "options", "max_tokens"})
    if unknown:
        raise RequestError(422, f"unknown form fields: {', '.join(unknown)}")
    if file is None:
        raise RequestError(422, "missing file part 'image'")
    part_type, data = file
    part_type = media_type(part_type)
    if part_type not in NEUTRAL_PART_TYPES and not part_type.startswith("image/"):
        raise RequestError(415, f"the image part has content type {part_type!r}; expected image/*")
    if len(data) > max_image_bytes:
        raise RequestError(413, f"image of {len(data)} bytes exceeds the {max_image_bytes}-byte limit")
    single = {}
    for name in ("mode", "max_tokens"):
        values = list(fields.get(name, ()))
        if len(values) > 1:
            raise RequestError(422, f"form field {name!r} given {len(values)} times")
        single[name] = values[0] if values else None
    max_tokens = single["max_tokens"]
    if max_tokens is not None:
        try:
            max_tokens = int(max_tokens)
        except ValueError:
            raise RequestError(422, f"max_tokens must be an integer, got {max_tokens!r}") from None
    options = form_options(list(fields.get("options", ())))
    mode, options = _mode_and_options(single["mode"], options, default_mode, max_options)
    return DiagnoseInput(data, mode, options, _max_tokens(max_tokens, max_tokens_limit))


# --------------------------------------------------------------------------- images
def decode_upload(data: bytes, limits: ImageLimits):
    """Decode and validate an uploaded image with the project's validator -> upright RGB PIL image.

    400 for anything that is not a usable image (including shapes the engine refuses), 413 for
    files or pixel counts above the limits. Nothing the decoder raises becomes a 500.
    """
    try:
        image = load_image(
            data,
            min_pixels=limits.resize_min_pixels,
            max_pixels=limits.resize_max_pixels,
            max_bytes=limits.max_bytes,
            pixel_cap=limits.max_pixels,
        )
    except ImageError as error:
        status = 413 if error.kind in TOO_LARGE_KINDS else 400
        raise RequestError(status, f"invalid image ({error.kind}): {error.reason}") from None
    except MemoryError:
        raise RequestError(413, "the image is too large to decode") from None
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, IndexError) as error:
        raise RequestError(400, f"invalid image: {type(error).__name__}: {error}") from None
    check_aspect_ratio(*image.size)
    return image


def check_aspect_ratio(width: int, height: int) -> None:
    """400 for images at least MAX_ASPECT_RATIO times longer than wide (or the reverse): the
    engine's image processor refuses them, and the request must fail as the client's error."""
    if max(width, height) >= MAX_ASPECT_RATIO * min(width, height):
        raise RequestError(400, f"invalid image (aspect_ratio): {width}x{height} after resizing; the long "
                                f"side must be under {MAX_ASPECT_RATIO} times the short side")
