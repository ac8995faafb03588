"""The bounded decode path: header checks before decoding, JPEG reduction, typed errors, concurrency."""

from __future__ import annotations

import io
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from image_probes import chunk, jpeg_declaring, png_with_chunk
from PIL import Image

from skinr1.data import image_decode
from skinr1.data.images import (
    DEFAULT_MAX_PIXELS,
    ENGINE_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    ImageError,
    check_image,
    decode_concurrency,
    image_size,
    load_image,
    pixel_bounds_size,
    set_decode_concurrency,
    to_rgb,
)


def png16_header(width: int, height: int) -> bytes:
    """A 16-bit greyscale PNG declaring width x height whose pixel data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg(width: int, height: int, **params) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG", **params)
    return buffer.getvalue()


# --------------------------------------------------------------------------- limits before decoding
def test_the_cap_sits_near_the_engine_bound():
    assert ENGINE_MAX_PIXELS <= DEFAULT_MAX_PIXELS <= 2 * ENGINE_MAX_PIXELS


def test_an_81_megapixel_16bit_png_is_refused_from_its_header():
    data = png16_header(9000, 9000)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        load_image(data, max_pixels=ENGINE_MAX_PIXELS)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert caught.value.kind == "decompression_bomb"
    assert elapsed < 0.5 and peak < 20 << 20  # nothing was decoded


def test_16bit_conversion_needs_no_float64_copy():
    image = Image.fromarray(np.full((1000, 1000), 65535, dtype=np.uint16))
    tracemalloc.start()
    rgb = to_rgb(image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert peak < 6 * 1_000_000  # a float64 copy alone would be 8 MB


def test_16bit_values_round_to_nearest():
    values = np.array([[0, 128, 129, 257, 32767, 65535]], dtype=np.uint16)
    grey = np.asarray(to_rgb(Image.fromarray(values)))[..., 0]
    assert grey.tolist() == [[round(int(v) * 255 / 65535) for v in values[0]]]


def test_a_large_jpeg_decodes_at_reduced_size():
    data = jpeg(2400, 1600)
    # The DCT scale is the largest that still covers the size the caller resizes to: 1/4 here.
    with image_decode.bounded_decode(data, fit=lambda w, h: (w // 4, h // 4)) as (image, stored):
        assert stored == (2400, 1600) and image.size == (600, 400)
    with image_decode.bounded_decode(data, fit=lambda w, h: (w // 4 + 10, h // 4 + 10)) as (image, _):
        assert image.size == (1200, 800)  # never below the wanted size
    with image_decode.bounded_decode(data, fit=lambda w, h: (100, 100)) as (image, _):
        assert image.size == (300, 200)  # 1/8 is the smallest scale
    image = load_image(data, max_pixels=300 * 28 * 28)
    assert image.width * image.height <= 300 * 28 * 28


@pytest.mark.parametrize("size", [(2400, 1600), (2000, 1999), (3001, 1000), (1000, 3001)])
def test_a_reduced_jpeg_ends_at_the_size_a_full_decode_would(size):
    """Prompt budgets count image tokens from the stored size; the fed image must match exactly."""
    width, height = size
    bound = 200 * 28 * 28
    target_h, target_w = pixel_bounds_size(height, width, None, bound)
    assert load_image(jpeg(width, height), max_pixels=bound).size == (target_w, target_h)


def test_a_jpeg_above_the_cap_decodes_reduced_instead_of_being_refused():
    image = load_image(jpeg(1200, 800), pixel_cap=300_000)
    assert image.width * image.height <= 300_000


def test_a_jpeg_too_large_even_at_one_eighth_is_refused():
    with pytest.raises(ImageError) as caught:
        load_image(jpeg(800, 800), pixel_cap=5_000)
    assert caught.value.kind == "decompression_bomb"


def test_a_tiny_jpeg_declaring_9000x9000_is_truncated():
    data = jpeg_declaring(9000, 9000)
    assert len(data) < 700
    with pytest.raises(ImageError) as caught:
        load_image(data)
    assert caught.value.kind == "truncated"
    assert check_image(data).kind == "truncated"


@pytest.mark.parametrize("params", [{}, {"optimize": True}, {"progressive": True}, {"subsampling": 0}])
def test_uniform_jpegs_are_not_mistaken_for_truncated(params):
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (128, 128, 128)).save(buffer, "JPEG", **params)
    assert check_image(buffer.getvalue()).ok


# --------------------------------------------------------------------------- aspect ratio
@pytest.mark.parametrize("size", [(20000, 1), (20000, 28), (28, 20000), (MAX_ASPECT_RATIO * 5, 5)])
def test_aspect_ratios_the_engine_refuses_are_image_errors(size):
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, "PNG")
    with pytest.raises(ImageError) as caught:
        load_image(buffer.getvalue(), max_pixels=ENGINE_MAX_PIXELS)
    assert caught.value.kind == "aspect_ratio"


def test_an_aspect_ratio_just_below_the_limit_loads():
    buffer = io.BytesIO()
    Image.new("RGB", (199 * 3, 3)).save(buffer, "PNG")
    assert load_image(buffer.getvalue()).size == (597, 3)


# --------------------------------------------------------------------------- decoder exceptions
MALFORMED = {
    "png_ztxt_oversized": png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (16 << 20))),
    "png_iccp_oversized": png_with_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"a" * (16 << 20))),
    "png_itxt_oversized": png_with_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + zlib.compress(b"a" * (16 << 20))),
    "ppm_maxval": b"P6 4 4 70000\n" + b"\0" * 96,
    "sgi_mode": struct.pack(">hBBHHHH", 474, 1, 3, 3, 4, 4, 3) + b"\0" * 500,
    "sgi_rle_mode": struct.pack(">hBBHHHH", 474, 0, 1, 3, 4, 4, 9) + b"\0" * 500,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_decoder_exceptions_become_image_errors(name, tmp_path):
    data = MALFORMED[name]
    with pytest.raises(ImageError) as caught:
        load_image(data)
    assert caught.value.reason
    path = tmp_path / name
    path.write_bytes(data)
    check = check_image(path)
    assert not check.ok and check.kind and check.reason


@pytest.mark.parametrize("content, kind", [(None, "missing"), (b"", "empty"), (b"not an image at all", "not_an_image"),
                                           (png16_header(20000, 10), "aspect_ratio")])
def test_header_reads_raise_image_errors(content, kind, tmp_path):
    """The prompt budget reads sizes from headers: a bad file is an ImageError there too."""
    path = tmp_path / "lesion.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        image_size(path)
    assert caught.value.kind == kind and str(path) in caught.value.reason
    Image.new("RGB", (600, 450)).save(path)
    assert image_size(path) == (600, 450)


def test_a_path_with_a_nul_byte_is_an_image_error():
    with pytest.raises(ImageError):
        load_image("bad\0name.png")


# --------------------------------------------------------------------------- concurrency
@pytest.fixture
def one_slot():
    before = decode_concurrency()
    set_decode_concurrency(1)
    yield
    set_decode_concurrency(before)


def test_large_decodes_wait_for_a_slot_small_ones_do_not(one_slot, monkeypatch):
    monkeypatch.setattr(image_decode, "UNGATED_MAX_PIXELS", 100 * 100)
    big = io.BytesIO()
    Image.new("RGB", (400, 400)).save(big, "PNG")
    small = io.BytesIO()
    Image.new("RGB", (50, 50)).save(small, "PNG")
    order: list[str] = []
    with image_decode._SLOTS.hold():  # someone else is decoding a large image
        worker = threading.Thread(target=lambda: (load_image(big.getvalue()), order.append("big")))
        worker.start()
        load_image(small.getvalue())
        order.append("small")
        time.sleep(0.2)
        assert order == ["small"]  # the large one is still waiting
    worker.join(timeout=10)
    assert order == ["small", "big"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_concurrency_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="limit"):
        set_decode_concurrency(bad)


def test_concurrency_from_the_environment(monkeypatch):
    monkeypatch.setenv(image_decode.DECODE_CONCURRENCY_ENV, "3")
    assert image_decode._concurrency_from_env() == 3
    monkeypatch.setenv(image_decode.DECODE_CONCURRENCY_ENV, "many")
    with pytest.raises(ValueError, match=image_decode.DECODE_CONCURRENCY_ENV):
        image_decode._concurrency_from_env()
