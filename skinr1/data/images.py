"""Safe image decoding for datasets and uploads: validate, convert to RGB, resize to pixel bounds.

Everything that reaches a vision model goes through `load_image`, so odd files fail here with one
clear reason instead of deep inside a processor: zero-byte files, text files named .jpg, truncated
downloads and decompression bombs raise `ImageError`; every odd pixel mode (alpha, palette, CMYK,
16-bit, float) comes out as 8-bit RGB. `check_image` runs the same decode for dataset preparation
and reports instead of raising.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow warns above this many pixels and refuses above twice as many; we treat the warning
# threshold as a hard cap by default because no dermatology photo legitimately comes close.
DEFAULT_MAX_PIXELS = 89_478_485

# Qwen2.5-VL: 14-pixel patches merged 2x2, so both sides must be multiples of 28.
QWEN_FACTOR = 28

# Modes `to_rgb` knows how to convert faithfully.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV",
     "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

# `warnings.catch_warnings` swaps the process-wide filter list and restores it on exit; two threads
# decoding at once (a server decoding uploads in a thread pool) could restore each other's filters
# and leave the "error" filter on, or lose it. Decoding under this lock keeps the swap atomic.
_WARNINGS_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image that cannot be used; `kind` is a short machine-readable category for reports."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


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
def _read_source(source: ImageSource, max_bytes: int | None) -> tuple[io.BytesIO | str, str]:
    """Return something Pillow can open plus a label for messages; size checks happen here."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("empty", "zero-byte upload")
        if max_bytes is not None and len(data) > max_bytes:
            raise ImageError("file_too_large", f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
        return io.BytesIO(data), "<bytes>"
    path = os.fspath(source)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ImageError("missing", f"no such file: {path}") from None
    except OSError as error:
        raise ImageError("unreadable", f"cannot stat {path}: {error.strerror or error}") from None
    if not os.path.isfile(path):
        raise ImageError("unreadable", f"not a regular file: {path}")
    if size == 0:
        raise ImageError("empty", f"zero-byte file: {path}")
    if max_bytes is not None and size > max_bytes:
        raise ImageError("file_too_large", f"{size} bytes exceeds the {max_bytes}-byte limit: {path}")
    return path, path


def decode_image(
    source: ImageSource, max_bytes: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image (any mode); raise `ImageError` for anything unusable.

    `.load()` forces the whole pixel stream through the decoder, which is the only way to notice a
    truncated file: `Image.open` reads just the header.
    """
    handle, label = _read_source(source, max_bytes)
    # Pillow signals over-large images with a warning first; make it an error here (only here).
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle)
        except UnidentifiedImageError:
            raise ImageError("not_an_image", f"not a recognised image format: {label}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError("decompression_bomb", f"{label}: {error}") from None
        except OSError as error:
            raise ImageError(_os_error_kind(error, "unreadable"), f"{label}: {error}") from None
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageError("corrupt", f"{label}: declared size {width}x{height}")
        if max_pixels is not None and width * height > max_pixels:
            raise ImageError(
                "decompression_bomb", f"{label}: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}"
            )
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageError("decompression_bomb", f"{label}: {error}") from None
        except OSError as error:
            raise ImageError(_os_error_kind(error, "corrupt"), f"{label}: {error}") from None
        except (SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as error:
            # Pillow's plugins raise a zoo of exception types for damaged streams.
            raise ImageError("corrupt", f"{label}: {type(error).__name__}: {error}") from None
    if image.mode not in SUPPORTED_MODES:
        raise ImageError("unsupported_mode", f"{label}: pixel mode {image.mode!r}")
    return image


def _os_error_kind(error: OSError, default: str) -> str:
    # Pillow reports cut-off files as OSError("image file is truncated" / "Truncated File Read").
    return "truncated" if "truncat" in str(error).lower() else default


def check_image(path: ImageSource, max_bytes: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Decode `path` like `load_image` would and report the outcome instead of raising."""
    try:
        image = decode_image(path, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as error:
        return ImageCheck(ok=False, reason=str(error), kind=error.kind)
    try:
        return ImageCheck(ok=True, width=image.width, height=image.height, mode=image.mode)
    finally:
        image.close()


# --------------------------------------------------------------------------- conversion
def _scale_to_uint8(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Map numeric pixels to 0-255: divide by the type's full scale, or stretch min..max when unknown."""
    data = values.astype(np.float64)
    if full_scale is None:
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
        data = (data - low) / (high - low) if high > low else np.zeros_like(data)
    else:
        data = data / full_scale
    return np.clip(np.rint(np.nan_to_num(data) * 255.0), 0, 255).astype(np.uint8)


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> RGB without the clipping `convert('L')` does."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        full_scale: float | None = 65535.0  # the type's range: dark 16-bit images stay dark
    elif image.mode == "I":
        # Pillow stores 8- and 16-bit greyscale in 32-bit "I" for some formats; infer the range.
        low, high = int(values.min()), int(values.max())
        full_scale = 255.0 if 0 <= low and high <= 255 else 65535.0 if 0 <= low and high <= 65535 else None
    else:  # "F": floats are usually 0..1 intensities; anything else gets stretched
        finite = values[np.isfinite(values)]
        inside_unit = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
        full_scale = 1.0 if inside_unit else None
    return Image.fromarray(_scale_to_uint8(values, full_scale), mode="L").convert("RGB")


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
    except (ValueError, OSError) as error:
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
    None); `pixel_cap` is the decompression-bomb limit on the stored image. Raises `ImageError`.
    """
    image = decode_image(path_or_bytes, max_bytes=max_bytes, max_pixels=pixel_cap)
    try:
        # Phone photos (PAD-UFES-20, uploads) store rotation in EXIF; the model must see them upright.
        image = ImageOps.exif_transpose(image)
    except (ValueError, OSError, SyntaxError, TypeError):
        pass  # a broken EXIF block is not a reason to reject pixels that decoded fine
    rgb = to_rgb(image)
    if min_pixels is not None or max_pixels is not None:
        rgb = resize_to_pixel_bounds(rgb, min_pixels, max_pixels, factor=factor)
    return rgb


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only, without decoding pixels (cheap)."""
    with Image.open(path) as image:
        return image.size
