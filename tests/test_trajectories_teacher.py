"""The teacher writer: retry policy, cache and concurrency against a real loopback HTTP server
(scripted responses), and end to end against vLLM's OpenAI-compatible server with the tiny model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from learner.group import free_port
from skinr1.data.records import Record
from skinr1.trajectories.build import make_job
from skinr1.trajectories.cache import ResponseCache, request_key
from skinr1.trajectories.config import TeacherConfig, TrajectoriesConfig
from skinr1.trajectories.context import build_context
from skinr1.trajectories.kinds import TRAJECTORY_TYPES
from skinr1.trajectories.writers_teacher import (
    TYPE_INSTRUCTIONS,
    TeacherWriter,
    backoff_delay,
    image_data_uri,
    teacher_instructions,
)

GOOD = "<thinking>Pearly. Malignant, malignant epidermal.</thinking>\n<final diagnosis>basal cell carcinoma (malignant)</final diagnosis>"


# --------------------------------------------------------------------------- pure parts
def test_backoff_doubles_with_jitter_and_honours_retry_after():
    assert [backoff_delay(a, 1.0, 30.0) for a in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(10, 1.0, 30.0) == 30.0
    assert backoff_delay(1, 1.0, 30.0, jitter=0.0) == 1.0
    assert backoff_delay(3, 1.0, 30.0, retry_after=2.5) == 2.5
    assert backoff_delay(0, 1.0, 5.0, retry_after=100) == 5.0


def test_cache_round_trip_and_corruption_is_a_miss(tmp_path):
    cache = ResponseCache(tmp_path)
    key = request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.5})
    assert key == request_key({"temperature": 0.5, "messages": [{"content": "x", "role": "user"}], "model": "m"})
    assert key != request_key({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7})
    assert cache.get(key) is None
    cache.put(key, {"completion": "hello"})
    assert cache.get(key)["completion"] == "hello" and len(cache) == 1
    cache.path(key).write_text("{truncated")
    assert cache.get(key) is None


# --------------------------------------------------------------------------- scripted loopback server
class _Script:
    """Responses to serve in order (then 200 with GOOD), and what the server saw."""

    def __init__(self, responses=(), delay=0.0):
        self.responses = list(responses)
        self.delay = delay
        self.requests = 0
        self.inflight = 0
        self.max_inflight = 0
        self.bodies = []
        self.lock = threading.Lock()


def _completion_body(text):
    return {
        "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


@pytest.fixture
def server():
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests += 1
                script.inflight += 1
                script.max_inflight = max(script.max_inflight, script.inflight)
                script.bodies.append(body)
                status, headers, sleep = script.responses.pop(0) if script.responses else (200, {}, 0.0)
            time.sleep(sleep or script.delay)
            payload = json.dumps(_completion_body(GOOD) if status == 200 else {"error": {"message": "scripted"}}).encode()
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout test)
            finally:
                with script.lock:
                    script.inflight -= 1

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def context():
    return build_context(TrajectoriesConfig())


def _jobs(tmp_path, context, n=1, config=None):
    image = tmp_path / "img.png"
    Image.new("RGB", (600, 300), (200, 100, 150)).save(image)
    config = config or TrajectoriesConfig()
    return [
        make_job(Record(f"r{i}", str(image), "basal_cell_carcinoma", 3, "synthetic", "bcc"), config, context)
        for i in range(n)
    ]


def _writer(context, url, tmp_path, sleeps, **overrides):
    settings = {"base_url": url, "model": "m", "max_retries": 3, "timeout_s": 5.0, **overrides}
    return TeacherWriter(context, TeacherConfig(**settings), str(tmp_path / "cache"), sleep=sleeps.append)


def test_prompt_carries_image_path_passages_and_task(tmp_path, context):
    job = _jobs(tmp_path, context)[0]
    uri = image_data_uri(job.record.image, 448)
    assert uri.startswith("data:image/png;base64,")
    with Image.open(job.record.image) as original:
        assert original.size == (600, 300)
    text = teacher_instructions(job, context, max_passage_chars=50)
    assert "malignant > malignant epidermal > basal cell carcinoma" in text
    assert "[1] basal cell carcinoma" in text
    assert "<final diagnosis>basal cell carcinoma (malignant)</final diagnosis>" in text


def test_every_type_has_an_instruction_and_random_ones_name_their_differential(tmp_path, context):
    assert set(TYPE_INSTRUCTIONS) == set(TRAJECTORY_TYPES)
    config = TrajectoriesConfig()
    config.types.direct = config.types.ddx_keep = config.types.ddx_switch = 0.0
    config.types.random_ddx_switch = 1.0
    job = _jobs(tmp_path, context, config=config)[0]
    x = context.taxonomy.node(job.plan.differential).name
    text = teacher_instructions(job, context, max_passage_chars=50)
    assert job.plan.trajectory_type == "random_ddx_switch"
    assert f"Start from {x} as your first impression" in text and f"differential: {x}" in text


def test_transient_errors_are_retried_then_cached(server, tmp_path, context):
    server.responses = [(503, {}, 0), (429, {"Retry-After": "0.25"}, 0), (500, {}, 0)]
    sleeps = []
    writer = _writer(context, server.url, tmp_path, sleeps)
    [generation] = writer.generate(_jobs(tmp_path, context))
    assert generation.completion == GOOD and not generation.cache_hit
    assert server.requests == 4 and writer.stats.retries == 3 and writer.stats.requests == 4
    assert sleeps[1] == 0.25  # Retry-After honoured
    assert 0.5 <= sleeps[0] <= 1.0 and 2.0 <= sleeps[2] <= 4.0  # exponential with jitter
    body = server.bodies[-1]
    assert body["model"] == "m" and body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png")

    again = _writer(context, server.url, tmp_path, [])
    [cached] = again.generate(_jobs(tmp_path, context))
    assert cached.completion == GOOD and cached.cache_hit
    assert server.requests == 4 and again.stats.requests == 0 and again.stats.cache_hits == 1


def test_client_errors_are_not_retried_and_failures_are_not_cached(server, tmp_path, context):
    server.responses = [(400, {}, 0)]
    writer = _writer(context, server.url, tmp_path, [])
    [generation] = writer.generate(_jobs(tmp_path, context))
    assert generation.completion is None and generation.error == "teacher_http_400"
    assert server.requests == 1 and writer.stats.failures == {"teacher_http_400": 1}
    assert len(writer.cache) == 0


def test_retries_are_bounded_and_timeouts_reported(server, tmp_path, context):
    server.responses = [(500, {}, 0)] * 5
    writer = _writer(context, server.url, tmp_path, [], max_retries=2)
    assert writer.generate(_jobs(tmp_path, context))[0].error == "teacher_http_500"
    assert server.requests == 3

    server.responses = [(200, {}, 1.5)]
    writer = _writer(context, server.url, tmp_path, [], max_retries=0, timeout_s=0.3)
    assert writer.generate(_jobs(tmp_path, context))[0].error == "teacher_timeout"


def test_connection_errors_are_reported(tmp_path, context):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    writer = _writer(context, f"http://127.0.0.1:{port}/v1", tmp_path, [], max_retries=1)
    assert writer.generate(_jobs(tmp_path, context))[0].error == "teacher_connection_error"
    assert writer.stats.requests == 2


def test_concurrency_is_bounded(server, tmp_path, context):
    server.delay = 0.2
    writer = _writer(context, server.url, tmp_path, [], concurrency=2)
    jobs = _jobs(tmp_path, context, n=6)
    results = writer.generate(jobs)
    assert [g.completion for g in results] == [GOOD] * 6
    assert server.max_inflight == 2


# --------------------------------------------------------------------------- vLLM end to end
def _wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError("vLLM server did not become healthy")


@pytest.mark.slow
def test_teacher_against_vllm_server_rejects_nonsense_and_caches(tiny_model_dir, tmp_path):
    from skinr1.data.synthetic import synthesize
    from skinr1.trajectories import run

    synthesize(tmp_path / "synthetic", scale=0.05)
    port = free_port()
    log = open(tmp_path / "vllm.log", "w")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
         "--max-model-len", "2048", "--dtype", "float32", "--gpu-memory-utilization", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    config = TrajectoriesConfig(
        input=str(tmp_path / "synthetic" / "dense.jsonl"), output_dir=str(tmp_path / "out"), writer="teacher", top_k=2,
        teacher=TeacherConfig(base_url=f"http://127.0.0.1:{port}/v1", model="tiny", max_tokens=48, concurrency=4,
                              timeout_s=60, max_retries=1, backoff_s=0.1),
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, timeout=240)
        first = run(config)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

    n = first["totals"]["records"]
    assert n > 0 and first["totals"]["accepted"] + first["totals"]["rejected"] == n
    assert first["totals"]["rejected"] > 0  # a random-weight model writes nonsense
    assert sum(first["reject_reasons"].values()) == first["totals"]["rejected"]
    assert first["teacher"]["requests"] == n and first["teacher"]["cache_hits"] == 0 and not first["teacher"]["failures"]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == first["totals"]["rejected"] and all(r["reason"] and r["completion"] is not None for r in rejects)

    # The server is gone: a second run must be served entirely from the cache.
    second = run(config)
    assert second["teacher"] == {"requests": 0, "cache_hits": n, "retries": 0, "failures": {}}
    assert second["totals"] == first["totals"] and second["reject_reasons"] == first["reject_reasons"]
