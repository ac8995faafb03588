"""The one bounded decode path: every image is judged on its header before its pixels are decoded.

Before any pixel is decoded, the header must pass: a known format, a positive size, an aspect ratio
the vision engine accepts, and a pixel count under the cap - counted after JPEG's DCT-domain
reduction (`Image.draft`), so a 48-megapixel photo decodes at a quarter of its size instead of
being refused, while a PNG declaring 81 megapixels is refused at its header. A Huffman-coded JPEG
too short to hold one bit per block is truncated whatever its header claims. Every exception a
decoder raises becomes an `ImageError` with a kind and a reason, and at most
`decode_concurrency()` large decodes run at once per process (`DecodeSlots`), so a burst of large
uploads queues instead of multiplying memory, while small images pass without waiting.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
from typing import Callable, Iterator, Union

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

# Qwen2.5-VL's processor resizes to at most this many pixels (16384 patches of 28x28), and vLLM
# feeds it the same bound unless a run sets its own.
ENGINE_MAX_PIXELS = 16384 * 28 * 28
# Pixels a decode may produce. Twice the engine's bound: a 24-megapixel camera frame stored
# losslessly still decodes; JPEGs count after `draft` reduction (up to 1/8 per side).
DEFAULT_MAX_PIXELS = 2 * ENGINE_MAX_PIXELS
# vLLM's Qwen2-VL resize refuses images whose long side is >= 200 times the short one.
MAX_ASPECT_RATIO = 200
# Concurrent decodes per process unless `set_decode_concurrency` / SKINR1_DECODE_CONCURRENCY says otherwise.
DEFAULT_DECODE_CONCURRENCY = 4
DECODE_CONCURRENCY_ENV = "SKINR1_DECODE_CONCURRENCY"
# Images up to this many pixels (a 2048x2048 photo: 12 MB as RGB) decode without taking a slot.
UNGATED_MAX_PIXELS = 2048 * 2048

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

# JPEG frame markers that use arithmetic coding: no one-bit-per-block floor applies to them.
_ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageError(ValueError):
    """An image that cannot be used; `kind` is a short machine-readable category for reports.

    Kinds: missing, unreadable, empty, file_too_large, not_an_image, decompression_bomb,
    aspect_ratio, truncated, corrupt, unsupported_mode.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


# --------------------------------------------------------------------------- concurrency
class DecodeSlots:
    """A counting gate whose size can change while decodes are in flight (a semaphore cannot)."""

    def __init__(self, limit: int):
        self._limit = _check_concurrency(limit, "limit")
        self._active = 0
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        with self._changed:
            self._limit = _check_concurrency(limit, "limit")
            self._changed.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._changed:
            while self._active >= self._limit:
                self._changed.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify()


def _check_concurrency(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _concurrency_from_env() -> int:
    text = os.environ.get(DECODE_CONCURRENCY_ENV, "").strip()
    if not text:
        return DEFAULT_DECODE_CONCURRENCY
    try:
        return _check_concurrency(int(text), DECODE_CONCURRENCY_ENV)
    except ValueError:
        raise ValueError(f"{DECODE_CONCURRENCY_ENV} must be an integer >= 1, got {text!r}") from None


_SLOTS = DecodeSlots(_concurrency_from_env())


def set_decode_concurrency(limit: int) -> None:
    """How many images this process decodes at once (others wait); takes effect immediately."""
    _SLOTS.set_limit(limit)


def decode_concurrency() -> int:
    return _SLOTS.limit


# --------------------------------------------------------------------------- source
def read_source(source: ImageSource, max_bytes: int | None) -> tuple[io.BytesIO | str, str, int]:
    """Something Pillow can open, a label for messages and the size in bytes; size checks happen here."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("empty", "zero-byte upload")
        if max_bytes is not None and len(data) > max_bytes:
            raise ImageError("file_too_large", f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
        return io.BytesIO(data), "<bytes>", len(data)
    try:
        path = os.fspath(source)
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ImageError("missing", f"no such file: {source}") from None
    except (OSError, TypeError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise ImageError("unreadable", f"cannot stat {source!r}: {error}") from None
    if not os.path.isfile(path):
        raise ImageError("unreadable", f"not a regular file: {path}")
    if size == 0:
        raise ImageError("empty", f"zero-byte file: {path}")
    if max_bytes is not None and size > max_bytes:
        raise ImageError("file_too_large", f"{size} bytes exceeds the {max_bytes}-byte limit: {path}")
    return path, path, size


# --------------------------------------------------------------------------- header checks
def check_aspect(width: int, height: int, label: str) -> None:
    if max(width, height) >= MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            "aspect_ratio", f"{label}: {width}x{height} has an aspect ratio of {max(width, height) / min(width, height):.0f}, "
            f"the vision engine needs < {MAX_ASPECT_RATIO}"
        )


def _jpeg_reduction(width: int, height: int, cap: int | None, wanted: tuple[int, int] | None) -> int:
    """The DCT scale (1, 2, 4 or 8) to decode at: the largest that still covers `wanted` (w, h),
    at least the smallest that brings the image under `cap`; 0 when even 1/8 stays above it."""
    scale = 1
    if wanted is not None:
        ratio = min(width // max(wanted[0], 1), height // max(wanted[1], 1))
        scale = max((s for s in (8, 4, 2, 1) if s <= ratio), default=1)
    if cap is None:
        return scale
    for candidate in (s for s in (1, 2, 4, 8) if s >= scale):
        if math.ceil(width / candidate) * math.ceil(height / candidate) <= cap:
            return candidate
    return 0


def _jpeg_frame(image: JpegImagePlugin.JpegImageFile) -> tuple[int, int, int]:
    """(frame marker, max horizontal sampling, max vertical sampling) of an opened JPEG."""
    marker = 0xC0
    fp = image.fp
    if fp is not None:
        position = fp.tell()
        try:
            fp.seek(0)
            marker = _frame_marker(fp.read(image.tile[0].offset if image.tile else 0)) or marker
        finally:
            fp.seek(position)
    layers = image.layer or [(0, 1, 1, 0)]
    return marker, max(max(layer[1] for layer in layers), 1), max(max(layer[2] for layer in layers), 1)


def _frame_marker(header: bytes) -> int | None:
    """The SOFn marker byte found by walking the marker segments of a JPEG header."""
    position = 2
    while position + 4 <= len(header):
        if header[position] != 0xFF:
            return None
        marker = header[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_SOF:
            return marker
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        position += 2 + int.from_bytes(header[position + 2 : position + 4], "big")
    return None


def check_jpeg_length(image: JpegImagePlugin.JpegImageFile, size: int, label: str) -> None:
    """Huffman coding spends at least one bit per MCU: fewer bytes than that cannot be the image."""
    marker, h_max, v_max = _jpeg_frame(image)
    if marker in _ARITHMETIC_SOF:
        return
    width, height = image.size
    mcus = math.ceil(width / (8 * h_max)) * math.ceil(height / (8 * v_max))
    scan_bytes = size - (image.tile[0].offset if image.tile else 0)
    if scan_bytes * 8 < mcus:
        raise ImageError(
            "truncated", f"{label}: {scan_bytes} bytes of image data cannot hold {width}x{height} pixels "
            f"({mcus} JPEG blocks need at least {math.ceil(mcus / 8)})"
        )


# --------------------------------------------------------------------------- decoding
def _decoder_error(error: BaseException, label: str, stage: str) -> ImageError:
    """Map whatever a Pillow plugin raised while `stage` ("opening", "decoding") to a typed error."""
    if isinstance(error, ImageError):
        return error
    if isinstance(error, UnidentifiedImageError):
        return ImageError("not_an_image", f"not a recognised image format: {label}")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError("decompression_bomb", f"{label}: {error}")
    if isinstance(error, OSError):
        truncated = "truncat" in str(error).lower()
        return ImageError("truncated" if truncated else "unreadable" if stage == "opening" else "corrupt", f"{label}: {error}")
    if isinstance(error, MemoryError):
        return ImageError("decompression_bomb", f"{label}: out of memory while {stage}")
    # Pillow's plugins raise a zoo of types for damaged files (ValueError for oversized text/ICC
    # chunks and bad PPM/SGI headers, SyntaxError, struct.error, EOFError, IndexError, ...).
    return ImageError("corrupt", f"{label}: {type(error).__name__} while {stage}: {error}")


def header_size(source: ImageSource, max_bytes: int | None = None) -> tuple[int, int]:
    """The stored (width, height) from the header, pixels never decoded; a file that is missing,
    not an image or has an unusable declared size raises `ImageError`, never a Pillow exception."""
    handle, label, _ = read_source(source, max_bytes)
    try:
        with Image.open(handle) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001 - any plugin failure is a property of the file
        raise _decoder_error(error, label, "opening") from None
    if width <= 0 or height <= 0:
        raise ImageError("corrupt", f"{label}: declared size {width}x{height}")
    check_aspect(width, height, label)
    return width, height


@contextlib.contextmanager
def bounded_decode(
    source: ImageSource,
    max_bytes: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    fit: Callable[[int, int], tuple[int, int]] | None = None,
) -> Iterator[tuple[Image.Image, tuple[int, int]]]:
    """Check the header, then decode; yields the image (any mode) and the stored (width, height).

    `fit` maps the stored (width, height) to the size the caller will resize to: a JPEG decodes at
    the smallest DCT scale that still covers it (and at least the one that brings it under the
    cap). `max_pixels=None` falls back to Pillow's own bomb limit. An image above
    `UNGATED_MAX_PIXELS` is decoded - and the caller's block runs, converting it - while holding
    one of the process's decode slots; small images never wait behind large ones.
    """
    handle, label, size = read_source(source, max_bytes)
    cap = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    try:
        image = Image.open(handle)
    except Exception as error:  # noqa: BLE001 - any plugin failure is a property of the file
        raise _decoder_error(error, label, "opening") from None
    try:
        stored = width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError("corrupt", f"{label}: declared size {width}x{height}")
        check_aspect(width, height, label)
        if isinstance(image, JpegImagePlugin.JpegImageFile):
            check_jpeg_length(image, size, label)
            scale = _jpeg_reduction(width, height, cap, fit(width, height) if fit else None)
            if scale == 0:
                raise ImageError("decompression_bomb", f"{label}: {width}x{height} stays above the cap of {cap} pixels even at 1/8 size")
            if scale > 1:
                # Floor division: Pillow picks the largest scale s with size // requested >= s.
                image.draft(None, (max(width // scale, 1), max(height // scale, 1)))
        if cap is not None and image.width * image.height > cap:
            raise ImageError("decompression_bomb", f"{label}: {width}x{height} = {width * height} pixels exceeds the cap of {cap}")
    except Exception as error:  # noqa: BLE001
        image.close()
        raise _decoder_error(error, label, "opening") from None
    heavy = image.width * image.height > UNGATED_MAX_PIXELS
    with _SLOTS.hold() if heavy else contextlib.nullcontext():
        try:
            image.load()
        except Exception as error:  # noqa: BLE001
            image.close()
            raise _decoder_error(error, label, "decoding") from None
        yield image, stored
