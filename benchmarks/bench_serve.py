"""Serving latency and throughput: /v1/diagnose through Ray Serve vs the same engine called in-process.

    python benchmarks/bench_serve.py [--checkpoint DIR] [--requests 64] [--concurrency 1,16] [--max-tokens 32]
    python benchmarks/bench_serve.py --skip-in-process --concurrency 4 --heavy 4   # + large 16-bit PNGs

Both paths run the same `DiagnosisService` (vLLM AsyncLLMEngine + the shared prompt and parser)
with the same settings and images; the Serve path adds HTTP, JSON/base64, validation and Serve's
proxy -> replica hop. Each case sends `--requests` requests from N concurrent clients and reports
p50/p95 latency and requests/s. Without --checkpoint it builds the tiny model and a fresh LoRA
adapter (random weights: completions run to --max-tokens, so every request does the same work).
The two paths run one after the other, never at the same time.

With `--heavy N`, the Serve path is measured a second time while N more clients keep large 16-bit
PNGs in flight (`--heavy-side` squared pixels, e.g. 9000 -> 81 MP: a file of a few hundred KB
whose decoded pixels are hundreds of MB). The small requests' p95 with and without them shows
whether decoding big uploads starves everyone else (the target: within 2x).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def images(count: int, size: int) -> list[bytes]:
    """Distinct PNGs, so no request is a repeat of another (no shared prefix-cache shortcuts)."""
    from PIL import Image

    out = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (size, size), (index * 37 % 256, index * 91 % 256, 128)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def heavy_png(side: int) -> bytes:
    """A `side` x `side` 16-bit greyscale PNG: tiny file, large decoded image."""
    import numpy as np
    from PIL import Image

    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(side - 1, 1)).astype(np.uint16)
    pixels = np.broadcast_to(ramp, (side, side))
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=9)  # mode I;16
    return buffer.getvalue()


async def under_background_load(measure: Callable[[], Awaitable[Any]], background: Callable[[], Awaitable[Any]],
                                clients: int, settle_s: float = 2.0) -> tuple[Any, int]:
    """Run `measure()` while `clients` loops keep calling `background()`; returns its result and how
    many background calls completed."""
    stop = asyncio.Event()
    completed = 0

    async def loop() -> None:
        nonlocal completed
        while not stop.is_set():
            await background()
            completed += 1

    tasks = [asyncio.create_task(loop()) for _ in range(clients)]
    await asyncio.sleep(settle_s)  # the heavy requests are in flight before the first measured one
    try:
        return await measure(), completed
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def drive(call: Callable[[bytes], Awaitable[Any]], payloads: list[bytes], concurrency: int) -> tuple[list[float], float]:
    """`concurrency` closed-loop clients share `payloads`; returns per-request latencies and wall time."""
    pending = iter(payloads)
    latencies: list[float] = []

    async def client() -> None:
        for payload in pending:  # one iterator shared by all clients: each payload is sent once
            started = time.perf_counter()
            await call(payload)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def summary(path: str, concurrency: int, latencies: list[float], wall: float) -> dict[str, Any]:
    import numpy as np

    values = np.asarray(latencies) * 1000.0
    return {
        "path": path, "clients": concurrency, "requests": len(latencies),
        "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
        "req_per_s": len(latencies) / wall,
    }


async def run_cases(path: str, call, payloads: list[bytes], concurrencies: list[int], warmup: int) -> list[dict]:
    await drive(call, payloads[:warmup], min(warmup, max(concurrencies)))
    rows = []
    for concurrency in concurrencies:
        latencies, wall = await drive(call, payloads, concurrency)
        rows.append(summary(path, concurrency, latencies, wall))
        print(f"  {path:<10} clients={concurrency:<3} done in {wall:.1f}s", flush=True)
    return rows


def bench_serve(policy, config, payloads, concurrencies, warmup, heavy: int = 0, heavy_side: int = 9000) -> list[dict]:
    import httpx
    from ray import serve

    from skinr1.cluster import init_ray, shutdown_ray
    from skinr1.serving.app import start

    init_ray(num_cpus=4)
    started = time.perf_counter()
    start(config, policy)
    print(f"Serve app up in {time.perf_counter() - started:.1f}s", flush=True)

    async def main() -> list[dict]:
        connections = max(concurrencies) + heavy
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=f"http://{config.host}:{config.port}", timeout=600,
                                     trust_env=False, limits=limits) as http:
            async def call(image: bytes) -> None:
                response = await http.post("/v1/diagnose", json={"image": base64.b64encode(image).decode()})
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")

            rows = await run_cases("serve", call, payloads, concurrencies, warmup)
            if heavy:
                big = heavy_png(heavy_side)
                print(f"  heavy: {heavy} clients sending a {heavy_side}x{heavy_side} 16-bit PNG of {len(big)} bytes",
                      flush=True)
                statuses: dict[int, int] = {}

                async def call_heavy() -> None:
                    body = {"image": base64.b64encode(big).decode(), "max_tokens": 1}
                    status = (await http.post("/v1/diagnose", json=body)).status_code
                    statuses[status] = statuses.get(status, 0) + 1

                for concurrency in concurrencies:
                    (latencies, wall), completed = await under_background_load(
                        lambda: drive(call, payloads, concurrency), call_heavy, heavy)
                    rows.append(summary(f"serve+{heavy}big", concurrency, latencies, wall))
                    print(f"  serve+{heavy}big clients={concurrency:<3} done in {wall:.1f}s; heavy requests answered: "
                          f"{completed} (statuses {statuses})", flush=True)
            return rows

    try:
        return asyncio.run(main())
    finally:
        serve.delete(config.app_name)
        serve.shutdown()
        shutdown_ray()


def bench_in_process(policy, config, payloads, concurrencies, warmup) -> list[dict]:
    from skinr1.cluster import LOCAL_NODE_ENV
    from skinr1.serving.requests import DiagnoseInput
    from skinr1.serving.service import DiagnosisService

    for key, value in LOCAL_NODE_ENV.items():  # the engine's internal queues stay on loopback
        os.environ.setdefault(key, value)

    async def main() -> list[dict]:
        started = time.perf_counter()
        service = DiagnosisService(policy, config)
        print(f"in-process engine up in {time.perf_counter() - started:.1f}s", flush=True)
        try:
            async def call(image: bytes) -> None:
                await service.diagnose(DiagnoseInput(image, config.mode))

            return await run_cases("in-process", call, payloads, concurrencies, warmup)
        finally:
            service.shutdown()

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="adapter / model directory (default: tiny model + fresh adapter)")
    parser.add_argument("--requests", type=int, default=128, help="requests per case")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client counts")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion length")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square test images")
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests before each path")
    parser.add_argument("--port", type=int, default=0, help="Serve HTTP port (0: a free one)")
    parser.add_argument("--heavy", type=int, default=0,
                        help="also measure the Serve path with this many clients sending large 16-bit PNGs")
    parser.add_argument("--heavy-side", type=int, default=5000,
                        help="side of the heavy PNGs (5000: 25 MP, under the default cap: decoded; 9000: 81 MP, refused at its header)")
    parser.add_argument("--max-image-pixels", type=int, default=0,
                        help="ServeConfig.max_image_pixels (0: the default cap); above 81e6 the heavy PNGs are decoded")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()

    from learner.group import free_port
    from rollout.engine import EngineSettings
    from skinr1.serving.config import ServeConfig
    from skinr1.serving.demo import write_demo_checkpoint
    from skinr1.serving.policy import resolve_policy

    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="skinr1-bench-serve-") as scratch:
        checkpoint = args.checkpoint or write_demo_checkpoint(scratch)
        policy = resolve_policy(checkpoint)
        config = ServeConfig(
            port=args.port or free_port(), app_name="skinr1-bench", max_tokens=args.max_tokens,
            max_ongoing_requests=max(64, max(concurrencies)),
            **({"max_image_pixels": args.max_image_pixels} if args.max_image_pixels else {}),
            # Pixel bounds as a trained policy records them: a large upload is resized before the engine.
            engine=EngineSettings(max_model_len=2048, max_lora_rank=max(8, policy.adapter_rank), max_pixels=401_408),
        )
        payloads = images(args.requests, args.image_size)
        rows: list[dict] = []
        if not args.skip_serve:
            rows += bench_serve(policy, config, payloads, concurrencies, args.warmup, args.heavy, args.heavy_side)
        if not args.skip_in_process:
            rows += bench_in_process(policy, config, payloads, concurrencies, args.warmup)

    print(f"\nmodel {policy.name}, {args.requests} requests per case, max_tokens={args.max_tokens}, "
          f"{args.image_size}x{args.image_size} PNG")
    print(f"{'path':<11} {'clients':>7} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>8}")
    for row in rows:
        print(f"{row['path']:<11} {row['clients']:>7} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['req_per_s']:>8.2f}")
    for loaded in (r for r in rows if r["path"].endswith("big")):
        quiet = next(r for r in rows if r["path"] == "serve" and r["clients"] == loaded["clients"])
        print(f"p95 with {args.heavy} large 16-bit PNGs in flight / without, {loaded['clients']} clients: "
              f"{loaded['p95_ms'] / quiet['p95_ms']:.2f}x")
    return 0


if __name__ == "__main__":  # vLLM starts its engine process with spawn
    sys.exit(main())
