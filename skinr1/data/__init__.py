"""SkinR1 dataset layer: the `Record` manifest format, safe image loading, dataset readers,
`prepare` (dataset -> manifest + audit report) and the synthetic demo dataset.

    from skinr1.data import Record, read_jsonl, load_image
    records = read_jsonl("prepared/ham10000/manifest.jsonl")
    image = load_image(records[0].image, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)

Modules: records (Record, JSONL I/O), images (decode/convert/resize), readers (one format per
dataset), prepare + report (`skinr1 data prepare`), synthetic + synthetic_render (`skinr1 data synth`).
"""

from __future__ import annotations

from typing import Any

from skinr1.data.images import (
    DEFAULT_MAX_PIXELS,
    QWEN_FACTOR,
    ImageCheck,
    ImageError,
    check_image,
    load_image,
    pixel_bounds_size,
    resize_to_pixel_bounds,
    to_rgb,
)
from skinr1.data.records import DEFAULT_SPLIT, Record, read_jsonl, write_jsonl

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SPLIT",
    "QWEN_FACTOR",
    "ImageCheck",
    "ImageError",
    "Record",
    "check_image",
    "load_image",
    "pixel_bounds_size",
    "read_jsonl",
    "read_manifest",
    "resize_to_pixel_bounds",
    "synthesize",
    "to_rgb",
    "write_jsonl",
]

# Imported on first use: they pull in the taxonomy, which plain manifest readers (trajectory
# builders, RL workers) do not need. `prepare` is not re-exported because the submodule of the
# same name would shadow it: use `from skinr1.data.prepare import prepare`.
_LAZY = {
    "read_manifest": ("skinr1.data.readers", "read_manifest"),
    "synthesize": ("skinr1.data.synthetic", "synthesize"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'skinr1.data' has no attribute {name!r}")
