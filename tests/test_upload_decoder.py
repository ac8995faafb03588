"""Large uploads decode in low-priority worker processes (real spawned processes, no Ray, no engine)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from skinr1.serving.requests import ImageLimits, RequestError, decode_upload
from skinr1.serving.upload_decoder import UploadDecoder, needs_worker

LIMITS = ImageLimits(max_bytes=20_000_000, max_pixels=6_000_000, resize_min_pixels=56 * 56, resize_max_pixels=112 * 112)
LARGE_SIDE = 2100  # above the 2048x2048 that small images stay under


def png(side: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def decoder():
    decoder = UploadDecoder(LIMITS, workers=1, nice=19)
    yield decoder
    decoder.shutdown()


def status_of(decoder: UploadDecoder, data: bytes) -> int:
    with pytest.raises(RequestError) as raised:
        asyncio.run(decoder.decode(data))
    return raised.value.status


def test_only_images_declaring_more_than_2048x2048_go_to_a_worker():
    assert not needs_worker(png(64))
    assert needs_worker(png(LARGE_SIDE))
    assert not needs_worker(b"not an image")  # the replica reports it as the client's 400


def test_a_large_upload_decodes_in_a_niced_worker_to_the_same_image(decoder):
    assert decoder.worker_nice_values() == [max(19, os.getpriority(os.PRIO_PROCESS, 0))]
    data = png(LARGE_SIDE)
    image = asyncio.run(decoder.decode(data))
    expected = decode_upload(data, LIMITS)
    assert image.mode == "RGB" and image.size == expected.size and image.tobytes() == expected.tobytes()


def test_errors_raised_in_a_worker_reach_the_client_with_their_status(decoder):
    data = png(LARGE_SIDE)
    assert status_of(decoder, data[: len(data) // 2]) == 400  # truncated after a valid header
    assert status_of(decoder, png(2500)) == 413  # 6.25 MP above the 6 MP cap
    assert status_of(decoder, b"x" * 100) == 400  # unreadable: answered in the replica


def test_a_killed_worker_fails_its_request_with_503_and_is_replaced(decoder):
    (pid,) = {decoder._pool.submit(os.getpid).result() for _ in range(3)}
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # whether the pool notices before or during the next submit, the answer is the same
    assert status_of(decoder, png(LARGE_SIDE)) == 503
    assert asyncio.run(decoder.decode(png(LARGE_SIDE, seed=1))).mode == "RGB"
    assert decoder._pool.submit(os.getpid).result() != pid
