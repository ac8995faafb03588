"""Serving without a server: request validation, status codes, response schemas, streaming bodies
(settings and checkpoints: test_serving_config.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image

from skinr1.prompts import DEFAULT_FORMAT, ChoiceOption
from skinr1.serving.openai_compat import chat_completion_body, models_body, parse_chat_request
from skinr1.serving.requests import (
    ImageLimits,
    RequestError,
    body_kind,
    check_bearer,
    check_content_length,
    decode_base64_image,
    decode_upload,
    diagnose_from_form,
    diagnose_from_json,
    form_options,
    parse_json_object,
    token_digest,
)
from skinr1.serving.responses import DIAGNOSIS_KEYS, diagnosis_response, error_body
from skinr1.taxonomy import default_resolver


def png_bytes(size=(40, 30), colour=(180, 90, 70)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def status_of(call, *args, **kwargs) -> int:
    with pytest.raises(RequestError) as info:
        call(*args, **kwargs)
    assert info.value.message  # every rejection says why
    return info.value.status


JSON_LIMITS = dict(max_image_bytes=10_000, default_mode="open", max_options=4, max_tokens_limit=64)


# --------------------------------------------------------------------------- headers and auth
def test_content_types():
    assert body_kind("application/json") == "application/json"
    assert body_kind("Application/JSON; charset=utf-8") == "application/json"
    assert body_kind("multipart/form-data; boundary=xyz") == "multipart/form-data"
    assert status_of(body_kind, "text/plain") == 415
    assert status_of(body_kind, None) == 415
    assert status_of(body_kind, "multipart/form-data", accepted=("application/json",)) == 415


def test_content_length():
    check_content_length(None, 10)
    check_content_length("10", 10)
    assert status_of(check_content_length, "11", 10) == 413
    assert status_of(check_content_length, "ten", 10) == 400


def test_bearer_token():
    digest = token_digest("s3cret")
    check_bearer(None, None)  # no token configured: open
    check_bearer("Bearer s3cret", digest)
    check_bearer("bearer   s3cret ", digest)
    assert status_of(check_bearer, None, digest) == 401
    assert status_of(check_bearer, "Bearer", digest) == 401
    assert status_of(check_bearer, "Basic s3cret", digest) == 401
    assert status_of(check_bearer, "Bearer wrong", digest) == 401
    assert "s3cret" not in digest


# --------------------------------------------------------------------------- JSON bodies
def test_json_built_to_break_the_parser_gets_422():
    nested = b"[" * 100_000 + b"]" * 100_000
    info = pytest.raises(RequestError, parse_json_object, b'{"image": ' + nested + b"}")
    assert info.value.status == 422 and "nested" in info.value.message
    info = pytest.raises(RequestError, parse_json_object, b'{"max_tokens": ' + b"9" * 5000 + b"}")
    assert info.value.status == 422 and "digits" in info.value.message
    assert status_of(form_options, ["[" + "1" * 5000 + "]"]) == 422
    assert status_of(form_options, ["[" * 50_000]) == 422


def test_images_the_engine_refuses_get_400():
    # Whatever the resize bounds, what would reach the engine at >= 200:1 is refused.
    unbounded = ImageLimits(max_bytes=100_000, max_pixels=10_000_000)
    bounded = ImageLimits(max_bytes=100_000, max_pixels=10_000_000, resize_min_pixels=3136, resize_max_pixels=1_003_520)
    for limits, size in ((unbounded, (20000, 1)), (unbounded, (1, 20000)), (unbounded, (20000, 28)), (bounded, (20000, 28))):
        info = pytest.raises(RequestError, decode_upload, png_bytes(size=size), limits)
        assert info.value.status == 400 and "aspect" in info.value.message
    assert decode_upload(png_bytes(size=(2000, 28)), unbounded).size == (2000, 28)  # 71:1 is fine


def test_json_body_must_be_an_object():
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    assert status_of(parse_json_object, b"{not json") == 422
    assert status_of(parse_json_object, b"[1, 2]") == 422
    assert status_of(parse_json_object, b"\xff\xfe") == 422


def test_base64_images():
    data = png_bytes()
    encoded = base64.b64encode(data).decode()
    assert decode_base64_image(encoded, 10_000) == data
    assert decode_base64_image(f"data:image/png;base64,{encoded}", 10_000) == data
    assert decode_base64_image(f"data:;base64,{encoded}", 10_000) == data
    assert decode_base64_image(encoded[:40] + "\n" + encoded[40:], 10_000) == data  # wrapped lines
    assert status_of(decode_base64_image, f"data:text/plain;base64,{encoded}", 10_000) == 415
    assert status_of(decode_base64_image, "data:image/png,rawbytes", 10_000) == 422
    assert status_of(decode_base64_image, "not base64 at all!", 10_000) == 422
    assert status_of(decode_base64_image, "", 10_000) == 422
    assert status_of(decode_base64_image, 123, 10_000) == 422
    assert status_of(decode_base64_image, encoded, len(data) - 1) == 413
    assert status_of(decode_base64_image, "A" * 40_000, 10_000) == 413  # rejected before decoding


def test_diagnose_json_fields():
    image = base64.b64encode(png_bytes()).decode()
    parsed = diagnose_from_json({"image": image}, **JSON_LIMITS)
    assert parsed.mode == "open" and parsed.options == () and parsed.max_tokens is None
    parsed = diagnose_from_json({"image": image, "mode": "choice", "options": ["melanoma", " psoriasis "],
                                 "max_tokens": 32}, **JSON_LIMITS)
    assert parsed.options == ("melanoma", "psoriasis") and parsed.max_tokens == 32
    assert status_of(diagnose_from_json, {}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "extra": 1}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "mode": "guess"}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "mode": "choice"}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "mode": "choice", "options": "melanoma"}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "mode": "choice", "options": ["a"] * 5}, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_json, {"image": image, "options": ["melanoma", "psoriasis"]}, **JSON_LIMITS) == 422
    for bad in (0, 65, "8", True, 2.5):
        assert status_of(diagnose_from_json, {"image": image, "max_tokens": bad}, **JSON_LIMITS) == 422


# --------------------------------------------------------------------------- multipart
def test_diagnose_form_fields():
    data = png_bytes()
    parsed = diagnose_from_form({}, ("image/png", data), **JSON_LIMITS)
    assert parsed.image == data and parsed.mode == "open"
    parsed = diagnose_from_form({"mode": ["choice"], "options": ["melanoma", "psoriasis"], "max_tokens": ["8"]},
                                ("application/octet-stream", data), **JSON_LIMITS)
    assert parsed.options == ("melanoma", "psoriasis") and parsed.max_tokens == 8
    parsed = diagnose_from_form({"mode": ["choice"], "options": ['["melanoma", "psoriasis"]']}, ("", data), **JSON_LIMITS)
    assert parsed.options == ("melanoma", "psoriasis")
    assert status_of(diagnose_from_form, {}, None, **JSON_LIMITS) == 422
    assert status_of(diagnose_from_form, {}, ("text/plain", data), **JSON_LIMITS) == 415
    assert status_of(diagnose_from_form, {}, ("image/png", b"x" * 10_001), **JSON_LIMITS) == 413
    assert status_of(diagnose_from_form, {"colour": ["red"]}, ("image/png", data), **JSON_LIMITS) == 422
    assert status_of(diagnose_from_form, {"mode": ["open", "choice"]}, ("image/png", data), **JSON_LIMITS) == 422
    assert status_of(diagnose_from_form, {"max_tokens": ["many"]}, ("image/png", data), **JSON_LIMITS) == 422
    assert status_of(form_options, ["[broken"]) == 422
    assert form_options(["a", "b"]) == ["a", "b"]


# --------------------------------------------------------------------------- images
def test_uploads_go_through_the_project_validator():
    limits = ImageLimits(max_bytes=100_000, max_pixels=1_000_000)
    image = decode_upload(png_bytes(colour=(0, 0, 0)), limits)
    assert image.mode == "RGB" and image.size == (40, 30)
    rgba = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(rgba, format="PNG")
    assert decode_upload(rgba.getvalue(), limits).getpixel((0, 0)) == (255, 255, 255)  # transparency on white
    resized = decode_upload(png_bytes(size=(300, 200)), ImageLimits(100_000, 1_000_000, None, 56 * 56))
    assert resized.width % 28 == 0 and resized.height % 28 == 0 and resized.width * resized.height <= 56 * 56

    png = png_bytes(size=(64, 64))
    assert status_of(decode_upload, png[: len(png) // 2], limits) == 400  # truncated
    assert status_of(decode_upload, b"just some text, not an image", limits) == 400
    assert status_of(decode_upload, b"", limits) == 400
    assert status_of(decode_upload, png, ImageLimits(max_bytes=len(png) - 1, max_pixels=1_000_000)) == 413
    assert status_of(decode_upload, png_bytes(size=(100, 100)), ImageLimits(100_000, max_pixels=9_999)) == 413


# --------------------------------------------------------------------------- responses
def _differentials(node_id):
    from skinr1.trajectories.ddx import ddx_neighbours

    return ddx_neighbours(node_id, default_resolver().taxonomy, {})[0]


def _diagnose(text, mode="open", options=()):
    return diagnosis_response(text, mode=mode, options=list(options), taxonomy=default_resolver().taxonomy,
                              differentials_of=_differentials, model="tiny", policy_version=7, finish_reason="stop")


def test_well_formed_completion_gives_the_taxonomy_answer():
    taxonomy = default_resolver().taxonomy
    body = _diagnose(DEFAULT_FORMAT.render("Pearly papule with arborising vessels.", "basal cell carcinoma", "malignant"))
    assert set(DIAGNOSIS_KEYS) <= set(body)
    assert body["node_id"] == "basal_cell_carcinoma" and body["diagnosis"] == "basal cell carcinoma"
    assert body["path"] == taxonomy.path_names("basal_cell_carcinoma") and body["path"][-1] == "basal cell carcinoma"
    assert body["malignancy"] == "malignant" and body["stated_malignancy"] == "malignant"
    assert body["differentials"] and "basal cell carcinoma" not in body["differentials"]
    assert body["reasoning"] == "Pearly papule with arborising vessels."
    assert body["model"] == "tiny" and body["policy_version"] == 7 and body["format_ok"] is True
    json.dumps(body)  # serialisable as is


def test_unparseable_completion_gives_null_diagnosis_and_the_raw_text():
    for text in ("eti evenlydys8 gibberish", "", "<thinking>unclosed", "<final diagnosis>no such disease</final diagnosis>"):
        body = _diagnose(text)
        assert set(DIAGNOSIS_KEYS) <= set(body)
        assert body["diagnosis"] is None and body["node_id"] is None and body["path"] == []
        assert body["malignancy"] is None and body["differentials"] == []
        assert body["completion"] == text
        json.dumps(body)


def test_choice_answers_resolve_through_the_letter():
    options = [ChoiceOption("A", "psoriasis", "psoriasis"), ChoiceOption("B", "melanoma", "melanoma")]
    body = _diagnose(DEFAULT_FORMAT.render("Irregular pigment.", "melanoma", "malignant", letter="B"), "choice", options)
    assert body["node_id"] == "melanoma" and body["resolution"] == "chosen"
    assert body["options"] == [o.to_dict() for o in options]
    body = _diagnose(DEFAULT_FORMAT.render("?", "melanoma", None, letter="D"), "choice", options)
    assert body["diagnosis"] is None and body["resolution"] == "invalid_choice"


def test_error_body_is_openai_shaped():
    assert error_body(413, "too big") == {"error": {"message": "too big", "type": "request_too_large", "code": 413}}
    assert error_body(500, "x")["error"]["type"] == "server_error"


# --------------------------------------------------------------------------- OpenAI schema
CHAT_LIMITS = dict(max_image_bytes=10_000, max_images=1, max_tokens_limit=64, default_max_tokens=16, max_choices=4)


def test_chat_request_with_an_inline_image():
    data = png_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    chat = parse_chat_request({
        "model": "anything",
        "messages": [
            {"role": "system", "content": "You are a dermatologist."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri, "detail": "low"}},
                                         {"type": "text", "text": "Diagnosis?"}]},
        ],
        "max_completion_tokens": 8, "temperature": 0, "n": 2, "seed": 3, "presence_penalty": 0,
    }, **CHAT_LIMITS)
    assert chat.images == (data,)
    assert chat.messages[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Diagnosis?"}]
    assert (chat.max_tokens, chat.temperature, chat.n, chat.seed) == (8, 0.0, 2, 3)
    assert parse_chat_request({"messages": [{"role": "user", "content": "hi"}]}, **CHAT_LIMITS).max_tokens == 16


def test_chat_request_rejections():
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    user = {"role": "user", "content": "hi"}
    image = {"type": "image_url", "image_url": {"url": uri}}
    assert status_of(parse_chat_request, {"messages": []}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [user], "stream": True}, **CHAT_LIMITS) == 400
    assert status_of(parse_chat_request, {"messages": [{"role": "tool", "content": "x"}]}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [user, {"role": "assistant", "content": "x"}]}, **CHAT_LIMITS) == 422
    remote = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
    assert status_of(parse_chat_request, {"messages": [remote]}, **CHAT_LIMITS) == 400
    assert status_of(parse_chat_request, {"messages": [{"role": "user", "content": [image, image]}]}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [user], "n": 5}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [user], "max_tokens": 65}, **CHAT_LIMITS) == 422
    assert status_of(parse_chat_request, {"messages": [user], "temperature": "hot"}, **CHAT_LIMITS) == 422
    big = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 20_000}}
    assert status_of(parse_chat_request, {"messages": [{"role": "user", "content": [big]}]}, **CHAT_LIMITS) == 413


def test_chat_completion_body():
    body = chat_completion_body("abc", "tiny", ["one", "two"], ["length", "stop"], 10, 5, 2, created=1)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-abc" and body["model"] == "tiny"
    assert [c["message"]["content"] for c in body["choices"]] == ["one", "two"]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "stop"]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert models_body("tiny")["data"][0]["id"] == "tiny"


# --------------------------------------------------------------------------- body size while streaming
def test_body_size_is_enforced_while_streaming():
    from starlette.requests import Request

    from skinr1.serving.app import limited_request

    chunks = [b"x" * 600, b"y" * 600]

    async def receive():
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/", "query_string": b""}

    async def read(limit):
        request, _ = limited_request(Request(scope, receive), limit)
        return await request.body()

    with pytest.raises(RequestError) as info:
        asyncio.run(read(1000))
    assert info.value.status == 413
    chunks[:] = [b"x" * 600, b"y" * 600]
    assert len(asyncio.run(read(1200))) == 1200


def test_slow_bodies_time_out_and_refused_bodies_are_drained():
    from starlette.requests import Request

    from skinr1.serving.app import limited_request

    scope = {"type": "http", "method": "POST", "headers": [], "path": "/", "query_string": b""}

    async def trickle():  # one byte, then nothing
        if not hasattr(trickle, "sent"):
            trickle.sent = True
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(3600)

    async def slow():
        request, _ = limited_request(Request(scope, trickle), 1000, timeout_s=0.2)
        return await request.body()

    with pytest.raises(RequestError) as info:
        asyncio.run(asyncio.wait_for(slow(), 5))
    assert info.value.status == 408 and "0.2s" in info.value.message

    chunks = [b"x" * 600] * 5

    async def fast():
        return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}

    async def refuse_then_drain(max_drain):
        request, stream = limited_request(Request(scope, fast), 1000)
        with pytest.raises(RequestError):
            await request.body()
        return await stream.drain(max_drain), len(chunks)

    assert asyncio.run(refuse_then_drain(10_000)) == (True, 0)  # the whole body was consumed
    chunks[:] = [b"x" * 600] * 5
    assert asyncio.run(refuse_then_drain(600)) == (False, 1)  # at most max_drain (+ one chunk) more


def test_concurrent_decoding_leaves_warning_filters_alone():
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    # The replica decodes uploads in worker threads; the validator swaps warning filters while it runs.
    png = png_bytes(size=(64, 64))
    limits = ImageLimits(max_bytes=100_000, max_pixels=1_000_000)
    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as pool:
        sizes = set(pool.map(lambda _: decode_upload(png, limits).size, range(400)))
    assert sizes == {(64, 64)}
    assert warnings.filters == before
