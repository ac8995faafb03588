"""Image decoding, mode conversion, rejection of bad files and pixel-bound resizing."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from skinr1.data.images import (
    ImageError,
    check_image,
    load_image,
    pixel_bounds_size,
    resize_to_pixel_bounds,
    to_rgb,
)


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares huge dimensions (the classic decompression-bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "I;16B", "F"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (7, 5))
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (7, 5)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_pixels_composite_on_white(mode):
    image = Image.new(mode, (4, 4))  # all-zero: fully transparent black
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_half_transparent_red_blends_with_white():
    image = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    r, g, b = to_rgb(image).getpixel((0, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_palette_with_transparency_index_goes_white():
    image = Image.new("P", (3, 3), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_cyan_is_cyan():
    r, g, b = to_rgb(Image.new("CMYK", (2, 2), (255, 0, 0, 0))).getpixel((0, 0))
    assert r < 30 and g > 220 and b > 220


def test_16_bit_scales_instead_of_clipping():
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    rgb = np.asarray(to_rgb(Image.fromarray(values)))  # Pillow makes this mode I;16
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_16_bit_png_round_trip_keeps_mid_grey(tmp_path):
    values = np.full((4, 4), 30000, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    pixel = load_image(path).getpixel((0, 0))
    assert pixel[0] == round(30000 / 65535 * 255) and pixel[0] == pixel[1] == pixel[2]


def test_32_bit_integer_with_8_bit_range_is_kept():
    image = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 100, 255]


def test_float_unit_range_and_arbitrary_range():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32), mode="F")
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 128, 255]


def test_load_image_converts_files_of_every_format(tmp_path):
    sources = {
        "rgba.png": png_bytes(Image.new("RGBA", (9, 9), (0, 0, 255, 255))),
        "grey.jpg": jpeg_bytes(Image.new("L", (9, 9), 90)),
        "cmyk.jpg": jpeg_bytes(Image.new("CMYK", (9, 9), (0, 255, 255, 0))),
        "palette.png": png_bytes(Image.new("RGB", (9, 9), (10, 200, 10)).convert("P")),
    }
    for name, data in sources.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert load_image(path).mode == "RGB", name
        assert load_image(data).mode == "RGB", name  # the bytes path used for uploads


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (30, 10), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert load_image(buffer.getvalue()).size == (10, 30)


# --------------------------------------------------------------------------- rejection
def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    check = check_image(path)
    assert not check.ok and check.kind == "empty" and "zero-byte" in check.reason
    with pytest.raises(ImageError, match="zero-byte"):
        load_image(path)
    with pytest.raises(ImageError, match="zero-byte"):
        load_image(b"")


def test_missing_file(tmp_path):
    check = check_image(tmp_path / "nope.jpg")
    assert not check.ok and check.kind == "missing"


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a JPEG\n")
    check = check_image(path)
    assert not check.ok and check.kind == "not_an_image"
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert caught.value.kind == "not_an_image" and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("encode", [jpeg_bytes, png_bytes])
def test_truncated_file(tmp_path, encode):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.img"
    path.write_bytes(data[: len(data) // 2])
    check = check_image(path)
    assert not check.ok and check.kind in ("truncated", "corrupt"), check
    assert "truncat" in check.reason.lower() or check.kind == "corrupt"
    with pytest.raises(ImageError):
        load_image(path)


def test_decompression_bomb_declared_in_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    assert path.stat().st_size < 200
    check = check_image(path)
    assert not check.ok and check.kind == "decompression_bomb"
    with pytest.raises(ImageError, match="decompression_bomb"):
        load_image(path)


def test_decompression_bomb_with_lowered_cap(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(Image.new("RGB", (100, 100))))
    assert check_image(path).ok
    check = check_image(path, max_pixels=5_000)
    assert not check.ok and check.kind == "decompression_bomb" and "10000" in check.reason
    with pytest.raises(ImageError, match="decompression_bomb"):
        load_image(path, pixel_cap=5_000)


def test_byte_limit(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(Image.new("RGB", (50, 50))))
    assert check_image(path, max_bytes=10).kind == "file_too_large"


def test_good_image_check_reports_size_and_mode(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(png_bytes(Image.new("LA", (12, 8))))
    assert check_image(path) == check_image(path)
    check = check_image(path)
    assert check.ok and (check.width, check.height, check.mode) == (12, 8, "LA") and check.reason is None


# --------------------------------------------------------------------------- resizing
def test_in_bounds_image_rounds_each_side_to_factor():
    assert pixel_bounds_size(500, 333, 28 * 28, 2_000_000) == (504, 336)


def test_large_image_shrinks_under_max():
    h, w = pixel_bounds_size(4000, 6000, 256 * 28 * 28, 1280 * 28 * 28)
    assert h * w <= 1280 * 28 * 28 and h % 28 == 0 and w % 28 == 0
    assert abs((w / h) - 1.5) < 0.05


def test_small_image_grows_over_min():
    h, w = pixel_bounds_size(20, 30, 256 * 28 * 28, 1280 * 28 * 28)
    assert h * w >= 256 * 28 * 28 and h % 28 == 0 and w % 28 == 0


def test_extreme_aspect_ratio_stays_under_max():
    h, w = pixel_bounds_size(10, 10_000, 28 * 28, 100 * 28 * 28)
    assert h == 28 and w % 28 == 0 and h * w <= 100 * 28 * 28


def test_invalid_bounds_raise():
    with pytest.raises(ValueError):
        pixel_bounds_size(10, 10, 5000, 1000)
    with pytest.raises(ValueError):
        pixel_bounds_size(10, 10, None, 100)  # below one 28x28 block


def test_resize_is_pure_and_noop_when_already_fitting():
    image = Image.new("RGB", (56, 28))
    assert resize_to_pixel_bounds(image, None, None) is image
    bigger = resize_to_pixel_bounds(image, 56 * 56 * 2, None)
    assert image.size == (56, 28) and bigger.size[0] % 28 == 0 and bigger.size[1] % 28 == 0


def test_load_image_applies_bounds():
    data = png_bytes(Image.new("RGB", (1000, 700)))
    image = load_image(data, min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
    assert image.width % 28 == 0 and image.height % 28 == 0 and image.width * image.height <= 64 * 28 * 28


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    low_blocks=st.integers(1, 400),
    extra_blocks=st.integers(0, 3000),
    factor=st.sampled_from([1, 14, 28, 32]),
)
def test_pixel_bounds_properties(height, width, low_blocks, extra_blocks, factor):
    min_pixels = low_blocks * factor * factor
    max_pixels = min_pixels + extra_blocks * factor * factor
    h, w = pixel_bounds_size(height, width, min_pixels, max_pixels, factor)
    assert h % factor == 0 and w % factor == 0 and h >= factor and w >= factor
    assert h * w <= max_pixels  # a hard memory limit, always
    # The lower bound is reachable whenever the bounds leave room for one rounding step.
    if max_pixels >= 2 * min_pixels + 4 * factor * max(h, w):
        assert h * w >= min_pixels
    # Aspect ratio is kept up to rounding unless one side is pinned at a single block.
    if min(h, w) >= 4 * factor:
        target = math.log(height / width)
        assert abs(math.log(h / w) - target) < math.log(1.6)
