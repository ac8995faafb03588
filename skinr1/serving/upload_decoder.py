"""Where a replica decodes uploads: small images in a thread, large ones in low-priority processes.

A 25-megapixel 16-bit PNG takes about 0.6 s of a core to decode and convert, and a burst of them
would take the cores that the engine and the small requests need (on a 2-core machine, four in
flight tripled the small requests' p95). Large uploads therefore decode in `decode_concurrency`
worker processes started with a raised nice value: the kernel gives them only the CPU that the
engine and the event loop leave, they share no GIL with the replica, and their peak memory (hundreds
of MB for such a file) is theirs. A worker killed by the kernel (out of memory) fails that request
with a 503 and is replaced; the replica lives on.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from skinr1.data.images import UNGATED_MAX_PIXELS, ImageError, header_size
from skinr1.serving.requests import ImageLimits, RequestError, decode_upload


def needs_worker(data: bytes, large_pixels: int = UNGATED_MAX_PIXELS) -> bool:
    """Whether the header declares more than `large_pixels` pixels. A file whose header cannot be
    read stays in the replica: `decode_upload` turns it into the client's error there."""
    try:
        width, height = header_size(data)
    except ImageError:
        return False
    return width * height > large_pixels


def lower_priority(nice: int) -> None:
    """Raise the calling process's nice value to `nice` (never lower it: that needs privileges)."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


class UploadDecoder:
    """Decodes uploads for one replica; `decode` is what a request awaits."""

    def __init__(self, limits: ImageLimits, workers: int, nice: int, large_pixels: int = UNGATED_MAX_PIXELS):
        self.limits, self.workers, self.nice, self.large_pixels = limits, workers, nice, large_pixels
        self._pool: ProcessPoolExecutor | None = None
        self.start(wait=True)

    def start(self, wait: bool) -> None:
        """Start the worker processes (spawned: forking a process with running threads is unsafe);
        `wait` until they answer, so that the first large upload does not pay for their start-up."""
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=lower_priority, initargs=(self.nice,))
        started = [self._pool.submit(os.getpid) for _ in range(self.workers)]
        for ready in started if wait else ():
            ready.result()

    def worker_nice_values(self) -> list[int]:
        """The nice value each worker runs at (for checks and tests)."""
        return [self._pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result() for _ in range(self.workers)]

    def _decode_if_small(self, data: bytes):
        return None if needs_worker(data, self.large_pixels) else decode_upload(data, self.limits)

    async def decode(self, data: bytes):
        """The upright RGB image of an upload, or `RequestError` with the client's status."""
        # Even the header check runs off the event loop: some formats parse a lot before the size.
        image = await asyncio.to_thread(self._decode_if_small, data)
        if image is not None:
            return image
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, decode_upload, data, self.limits)
        except BrokenProcessPool:
            self._replace(pool)
            raise RequestError(503, "the image decoder stopped (out of memory?) while decoding this upload; "
                                    "retry, or send a smaller image") from None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Concurrent requests can see the same broken pool: only the first one replaces it.
        if self._pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self.start(wait=False)  # on the event loop: the next large upload waits for it, nobody else

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
