"""Safe image decoding for datasets and uploads: validate, convert to RGB, resize to pixel bounds.

Everything that reaches a vision model goes through `load_image`, so odd files fail here with one
clear reason instead of deep inside a processor or the engine: zero-byte files, text files named
.jpg, truncated downloads, decompression bombs, damaged chunks and aspect ratios the engine refuses
raise `ImageError` (the bounded decode path lives in `image_decode`); every odd pixel mode (alpha,
palette, CMYK, 16-bit, float) comes out as 8-bit RGB. `check_image` runs the same decode for
dataset preparation and reports instead of raising.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from skinr1.data.image_decode import (  # re-exported: the public API of image decoding
    DECODE_CONCURRENCY_ENV,
    DEFAULT_DECODE_CONCURRENCY,
    DEFAULT_MAX_PIXELS,
    ENGINE_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    UNGATED_MAX_PIXELS,
    ImageError,
    ImageSource,
    bounded_decode,
    check_aspect,
    decode_concurrency,
    header_size,
    set_decode_concurrency,
)

__all__ = [
    "DECODE_CONCURRENCY_ENV", "DEFAULT_DECODE_CONCURRENCY", "DEFAULT_MAX_PIXELS", "ENGINE_MAX_PIXELS",
    "MAX_ASPECT_RATIO", "QWEN_FACTOR", "SUPPORTED_MODES", "UNGATED_MAX_PIXELS", "ImageCheck", "ImageError", "ImageSource",
    "check_image", "decode_concurrency", "decode_image", "image_size", "load_image", "pixel_bounds_size",
    "resize_to_pixel_bounds", "set_decode_concurrency", "to_rgb",
]

# Qwen2.5-VL: 14-pixel patches merged 2x2, so both sides must be multiples of 28.
QWEN_FACTOR = 28

# Modes `to_rgb` knows how to convert faithfully.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV",
     "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of `check_image`; width/height/mode are those of the stored image (before RGB)."""

    ok: bool
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    kind: str | None = None  # ImageError.kind when not ok: missing, empty, truncated, ...


# --------------------------------------------------------------------------- decoding
def _check_mode(image: Image.Image) -> None:
    if image.mode not in SUPPORTED_MODES:
        raise ImageError("unsupported_mode", f"pixel mode {image.mode!r}")


def decode_image(
    source: ImageSource, max_bytes: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image (any mode); raise `ImageError` for anything unusable.

    The header is checked first (format, size, aspect ratio, `max_pixels`); a JPEG above the cap
    decodes at a reduced scale (so `.size` may be smaller than stored), anything else above it is
    refused. `.load()` then forces the whole pixel stream through the decoder, the only way to
    notice a truncated file.
    """
    with bounded_decode(source, max_bytes, max_pixels) as (image, _):
        _check_mode(image)
        return image


def check_image(path: ImageSource, max_bytes: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Decode `path` like `load_image` would and report the outcome instead of raising."""
    try:
        with bounded_decode(path, max_bytes, max_pixels) as (image, (width, height)):
            with image:
                _check_mode(image)
                return ImageCheck(ok=True, width=width, height=height, mode=image.mode)
    except ImageError as error:
        return ImageCheck(ok=False, reason=str(error), kind=error.kind)


# --------------------------------------------------------------------------- conversion
# 16-bit value -> nearest 8-bit value (v * 255 / 65535 = v / 257, exact in integers): one table
# lookup per pixel instead of a float64 copy eight times the image's size.
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)
# Rows converted per step when arithmetic is needed (32-bit integer and float images).
_CHUNK_PIXELS = 1 << 20


def _scale_rows(values: np.ndarray, low: float, span: float | None) -> np.ndarray:
    """(values - low) / span mapped to 0-255 (span None: values are already 0-255), a band of rows
    at a time so the float64 scratch space stays ~8 MB whatever the image size."""
    out = np.empty(values.shape, dtype=np.uint8)
    step = max(1, _CHUNK_PIXELS // max(values.shape[1], 1))
    for row in range(0, values.shape[0], step):
        band = values[row : row + step].astype(np.float64)
        if span is not None:
            band = (band - low) / span if span > 0 else np.zeros_like(band)
            band *= 255.0
        out[row : row + step] = np.clip(np.rint(np.nan_to_num(band)), 0, 255)
    return out


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> RGB without the clipping `convert('L')` does."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        # The type's range: dark 16-bit images stay dark.
        grey = _SIXTEEN_TO_EIGHT[values]
    elif image.mode == "I":
        # Pillow stores 8- and 16-bit greyscale in 32-bit "I" for some formats; infer the range.
        low, high = int(values.min()), int(values.max())
        if 0 <= low and high <= 255:
            grey = values.astype(np.uint8)
        elif 0 <= low and high <= 65535:
            grey = _SIXTEEN_TO_EIGHT[values]
        else:
            grey = _scale_rows(values, low, high - low)
    else:  # "F": floats are usually 0..1 intensities; anything else gets stretched
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            grey = _scale_rows(values, 0.0, 1.0)
        else:
            low = float(finite.min()) if finite.size else 0.0
            grey = _scale_rows(values, low, (float(finite.max()) - low) if finite.size else 0.0)
    return Image.fromarray(grey, mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any supported mode to 8-bit RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _wide_to_rgb(image)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        # White, not black: transparent margins of cut-out lesion photos should look like paper.
        # Pillow converts premultiplied "La" only to "LA"; go through it first.
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except Exception as error:  # noqa: BLE001 - a plugin's odd palette or mode, whatever it raises
        raise ImageError("unsupported_mode", f"cannot convert mode {mode!r} to RGB: {error}") from None


# --------------------------------------------------------------------------- resizing
def pixel_bounds_size(
    height: int, width: int, min_pixels: int | None, max_pixels: int | None, factor: int = QWEN_FACTOR
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels], aspect kept.

    Same idea as Qwen2.5-VL's `smart_resize` (round each side to the nearest multiple when the
    area is already in bounds), but robust for extreme aspect ratios and narrow bounds: the area
    never exceeds `max_pixels` (a memory limit), and reaches `min_pixels` whenever some
    rounding of the ideal size allows it.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    low = factor * factor if min_pixels is None else max(int(min_pixels), 1)
    high = math.inf if max_pixels is None else int(max_pixels)
    if high < factor * factor:
        raise ValueError(f"max_pixels={max_pixels} is below one {factor}x{factor} block")
    if low > high:
        raise ValueError(f"min_pixels={min_pixels} exceeds max_pixels={max_pixels}")

    area = min(max(height * width, low), high)
    scale = math.sqrt(area / (height * width))
    ideal_h, ideal_w = height * scale, width * scale
    # A side thinner than one block is pinned to one block; the other side carries the area.
    if ideal_h < factor:
        ideal_h, ideal_w = factor, area / factor
    elif ideal_w < factor:
        ideal_h, ideal_w = area / factor, factor

    def snap(value: float, how) -> int:
        return max(factor, int(how(value / factor)) * factor)

    h, w = snap(ideal_h, round), snap(ideal_w, round)
    if low <= h * w <= high:
        return h, w
    aspect = ideal_h / ideal_w
    candidates = {(snap(ideal_h, fh), snap(ideal_w, fw)) for fh in (math.floor, math.ceil) for fw in (math.floor, math.ceil)}

    def distortion(size: tuple[int, int]) -> float:
        return abs(math.log((size[0] / size[1]) / aspect))

    inside = [c for c in candidates if low <= c[0] * c[1] <= high]
    if inside:
        return min(inside, key=distortion)
    # No rounding lands inside (bounds narrower than one rounding step): stay under the cap.
    below = [c for c in candidates if c[0] * c[1] <= high] or [(factor, factor)]
    return max(below, key=lambda c: (c[0] * c[1], -distortion(c)))


def resize_to_pixel_bounds(
    image: Image.Image, min_pixels: int | None, max_pixels: int | None, factor: int = QWEN_FACTOR
) -> Image.Image:
    """Resize (bicubic) so both sides are multiples of `factor` and the area is within bounds.

    Pure: returns a new image (or the same object when no resize is needed), never mutates input.
    """
    height, width = pixel_bounds_size(image.height, image.width, min_pixels, max_pixels, factor)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------- public loader
def load_image(
    path_or_bytes: ImageSource,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    *,
    factor: int = QWEN_FACTOR,
    max_bytes: int | None = None,
    pixel_cap: int | None = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode a file or an upload's bytes into an upright 8-bit RGB image.

    `min_pixels`/`max_pixels` are the model's resize bounds (nothing is resized when both are
    None); a large JPEG decodes directly at the smallest DCT scale that still covers the resized
    size. `pixel_cap` bounds the pixels decoded (see `decode_image`). Raises `ImageError` for any
    unusable input, including aspect ratios of `MAX_ASPECT_RATIO` or more. At most
    `decode_concurrency()` images above `UNGATED_MAX_PIXELS` decode and convert at once per
    process; the rest wait.
    """
    fit = None
    if min_pixels is not None or max_pixels is not None:
        # Bad bounds are a ValueError (a setting), raised before any decoding, never an ImageError.
        pixel_bounds_size(factor, factor, min_pixels, max_pixels, factor)

        def fit(width: int, height: int) -> tuple[int, int]:
            target_h, target_w = pixel_bounds_size(height, width, min_pixels, max_pixels, factor)
            return target_w, target_h

    with bounded_decode(path_or_bytes, max_bytes, pixel_cap, fit) as (image, stored):
        _check_mode(image)
        rgb = _upright_rgb(image, stored, min_pixels, max_pixels, factor, path_or_bytes)
    check_aspect(rgb.width, rgb.height, "the resized image")
    return rgb


def _upright_rgb(
    image: Image.Image, stored: tuple[int, int], min_pixels, max_pixels, factor: int, source: ImageSource
) -> Image.Image:
    """Rotate per EXIF, convert to RGB and resize to the bounds of the *stored* size: a JPEG decoded
    at reduced scale ends at exactly the size a full decode would (what `fed_size` predicts)."""
    label = source if isinstance(source, (str, Path)) else "<bytes>"
    try:
        decoded = image.size
        try:
            # Phone photos (PAD-UFES-20, uploads) store rotation in EXIF; the model must see them upright.
            # In place: the default returns a full copy even when there is nothing to rotate.
            ImageOps.exif_transpose(image, in_place=True)
        except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to reject pixels that decoded fine
            pass
        width, height = stored if image.size == decoded else stored[::-1]
        rgb = to_rgb(image)
        if min_pixels is not None or max_pixels is not None:
            target_h, target_w = pixel_bounds_size(height, width, min_pixels, max_pixels, factor)
            if rgb.size != (target_w, target_h):
                rgb = rgb.resize((target_w, target_h), Image.Resampling.BICUBIC)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("decompression_bomb", f"{label}: out of memory while converting {image.width}x{image.height} pixels") from None
    except Exception as error:  # noqa: BLE001 - conversion of a decoded image must not crash callers
        raise ImageError("corrupt", f"{label}: {type(error).__name__} while converting: {error}") from None
    return rgb


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only, without decoding pixels (cheap); `ImageError` when the
    file is missing, not an image or declares an unusable size."""
    return header_size(path)
