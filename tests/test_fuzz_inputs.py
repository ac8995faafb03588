"""Seeded fuzzing: malformed images, JSON bodies and completions raise only the typed errors.

Images are valid files of many formats and modes, then damaged (truncated, bytes flipped, chunks
inserted or resized, headers patched to huge sizes, magic replaced) - a few hundred per run, the
same ones every run. Nothing may escape `load_image`/`check_image` but `ImageError`, and nothing
may escape the reward line scorer or the completion parser at all.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

import numpy as np
import pytest
from reward_helpers import good, tiny_resolver

from PIL import Image
from rewards import RewardConfig, RewardScorer
from skinr1.cli.reward_cmd import score_line
from skinr1.data.images import ImageError, check_image, load_image
from skinr1.prompts import parse_completion

SEED = 20240601
FORMATS = [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"), ("PNG", "I;16"), ("PNG", "1"),
           ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"),
           ("TIFF", "I;16"), ("TIFF", "F"), ("WEBP", "RGB"), ("PPM", "RGB"), ("SGI", "RGB"), ("TGA", "RGBA"),
           ("ICO", "RGBA"), ("JPEG2000", "RGB")]


def _valid(rng: random.Random, fmt: str, mode: str) -> bytes:
    width, height = rng.randint(1, 48), rng.randint(1, 48)
    if mode == "I;16":
        image = Image.fromarray(np.random.default_rng(rng.randint(0, 1 << 30)).integers(0, 65535, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(np.random.default_rng(rng.randint(0, 1 << 30)).normal(size=(height, width)).astype(np.float32))
    else:
        image = Image.new("RGB", (width, height), tuple(rng.randint(0, 255) for _ in range(3))).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _patch_size(data: bytes, rng: random.Random) -> bytes:
    """Claim a huge or degenerate size in the header, wherever the format keeps it."""
    width, height = rng.choice([(0, 0), (65535, 65535), (1 << 30, 3), (20000, 1), (1, 60000), (46341, 46341)])
    out = bytearray(data)
    if data.startswith(b"\x89PNG"):
        out[16:24] = struct.pack(">II", width, height)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif data.startswith(b"\xff\xd8"):
        sof = data.find(b"\xff\xc0")
        if sof > 0:
            out[sof + 5 : sof + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
    elif data.startswith(b"BM"):
        out[18:26] = struct.pack("<ii", min(width, 1 << 31 - 1), min(height, 1 << 31 - 1))
    return bytes(out)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:  # truncated
        return data[: rng.randint(0, max(len(data) - 1, 0))]
    if kind == 1:  # flipped bytes
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:  # huge or degenerate declared size
        return _patch_size(data, rng)
    if kind == 3:  # wrong magic
        return bytes(rng.randrange(256) for _ in range(4)) + data[4:]
    if kind == 4:  # a corrupt or oversized chunk spliced in after the first 33 bytes
        payload = rng.choice([b"\x00" * 16, zlib.compress(b"a" * (2 << 20)), bytes(rng.randrange(256) for _ in range(64))])
        tag = rng.choice([b"zTXt", b"iCCP", b"iTXt", b"tEXt", b"IDAT", b"IHDR", b"eXIf"])
        length = len(payload) if rng.random() < 0.7 else rng.randrange(1 << 31)
        return data[:33] + struct.pack(">I", length) + tag + b"k\x00\x00" + payload + b"\x00\x00\x00\x00" + data[33:]
    if kind == 5:  # random bytes behind a real header
        return data[: min(len(data), 40)] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))  # pure noise


def malformed_images(count: int) -> list[bytes]:
    rng = random.Random(SEED)
    valid = [_valid(rng, fmt, mode) for fmt, mode in FORMATS for _ in range(2)]
    return [_mutate(rng.choice(valid), rng) for _ in range(count)]


# Pillow warns about damaged EXIF/TIFF tags and large images on its way to the errors under test.
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
def test_malformed_images_raise_only_image_errors(tmp_path):
    failures = []
    for index, data in enumerate(malformed_images(400)):
        try:
            image = load_image(data, max_pixels=200 * 28 * 28)
            assert image.mode == "RGB" and max(image.size) < 200 * min(image.size)
        except ImageError as error:
            assert error.kind and error.reason
        except Exception as error:  # noqa: BLE001 - the point of the test
            failures.append((index, type(error).__name__, str(error)[:80]))
        if index % 8 == 0:  # the file path and the reporting variant too
            path = tmp_path / f"{index}.img"
            path.write_bytes(data)
            try:
                check = check_image(path)
            except Exception as error:  # noqa: BLE001
                failures.append((index, "check_image " + type(error).__name__, str(error)[:80]))
            else:
                assert check.ok or (check.kind and check.reason)
    assert not failures, failures[:10]


# --------------------------------------------------------------------------- JSON bodies and completions
def _random_json(rng: random.Random, depth: int = 0):
    choice = rng.randrange(9 if depth < 4 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False, 0, -1, 1e308, 2**70, float("nan")])
    if choice == 2:
        return "".join(rng.choice("ab<>/\\\u0000\ud7ff\u00e9 \n\"{}[]") for _ in range(rng.randint(0, 20)))
    if choice in (3, 4):
        return rng.choice(["mel", "melanoma", "bcc", "Psoriasis", "", "unk", "A", "B. mel", "malignant"])
    if choice in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["completion", "label", "source", "options", "mode", "extra"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _random_line(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return json.dumps(_random_json(rng))
    if kind == 1:  # a plausible record with one field broken
        record = {"completion": good("melanoma (malignant)"), "label": "mel", "source": "ham10000",
                  "options": ["A. mel", "B. bcc"]}
        record[rng.choice(list(record))] = _random_json(rng)
        return json.dumps(record)
    if kind == 2:
        depth = rng.choice([10, 100, 1000, 100_000])
        return "[" * depth + "]" * depth
    if kind == 3:
        text = json.dumps(_random_json(rng))
        cut = rng.randint(0, len(text))
        return text[:cut] + rng.choice(["", "}", "\x00", "\"", "{" * 50]) + text[cut:]
    if kind == 4:
        return rng.choice(["", "   ", "\t", "null", "1" * 5000, "\"" + "x" * 10_000])
    return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randint(1, 80)))


@pytest.mark.parametrize("preset", ["open", "paper"])
def test_malformed_reward_lines_become_records(preset):
    resolver = tiny_resolver()
    scorer = RewardScorer(RewardConfig.preset(preset), resolver)
    rng = random.Random(SEED)
    for _ in range(300):
        line = _random_line(rng)
        result = score_line(line, scorer, resolver)
        assert set(result) >= {"reward"}, line[:80]
        if result["reward"] is None:
            assert isinstance(result["error"], str) and result["error"], line[:80]
        else:
            assert 0.0 <= result["reward"] <= scorer.max_reward
            assert result.get("reasons") != ["internal_error"], (line[:80], result)
        json.dumps(result)  # always serialisable


def test_random_completions_never_break_the_parser():
    rng = random.Random(SEED)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", "melanoma", "(malignant)", "B.", " ", "\n", "<", ">",
              "\u0000", "\ud7ff", "x" * 50]
    resolver = tiny_resolver()
    scorer = RewardScorer(RewardConfig.preset("open"), resolver)
    from rewards import build_sample

    sample = build_sample(resolver, "mel", "open", source="ham10000")
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        parsed = parse_completion(text)
        assert parsed.format_ok in (True, False) and isinstance(parsed.answer_text, str)
        result = scorer.score(text, sample)
        assert result.reasons != ["internal_error"], text
    for odd in (None, 42, 3.5, b"bytes", ["<answer>x</answer>"], {"a": 1}, "x" * 1_000_000):
        parse_completion(odd)
