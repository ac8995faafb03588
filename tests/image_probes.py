"""Builders of hostile image files, shared by the image tests and `benchmarks/bench_images.py`."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunk(kind: bytes, data: bytes) -> bytes:
    """A valid 8x8 PNG with an extra chunk right after IHDR."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "PNG")
    png = buffer.getvalue()
    return png[:33] + chunk(kind, data) + png[33:]


def png_with_oversized_text(megabytes: int = 16) -> bytes:
    """A PNG whose zTXt chunk inflates past Pillow's text-chunk limit."""
    return png_with_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * (megabytes << 20)))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header is patched to claim width x height (~630 bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 60, 40)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)
