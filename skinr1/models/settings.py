"""`PolicySettings`: how every stage loads the policy, its processor and its images.

The run config's `model` section is the only source (see `skinr1.config.derive.policy_settings`);
the SFT workers, the GRPO learner ranks, the rollout / evaluation / serving engines and the merge
all receive this one object, so they load weights in the same dtype and cut images to the same
pixel bounds. The bounds act twice, identically: `load_image` resizes to them (multiples of 28,
aspect kept) and the processor is built with them, so the processor's own resize is then the
identity, in the learner's Hugging Face processor as in vLLM's (`mm_processor_kwargs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

DTYPES = ("float32", "bfloat16", "float16")
MERGE_SIZE = 2
"""Qwen2.5-VL merges 2x2 patches into one language-model token."""


@dataclass(frozen=True)
class PolicySettings:
    """Model settings every stage shares (derived from the run config's `model` section)."""

    dtype: str = "float32"
    """Weights dtype of training, merging and the engines (float32, bfloat16 or float16)."""
    min_pixels: Optional[int] = None
    """Image area lower bound (None: the checkpoint processor's own)."""
    max_pixels: Optional[int] = None
    """Image area upper bound (None: the checkpoint processor's own; Qwen2.5-VL's is ~12.8 MP)."""
    trust_remote_code: bool = False
    """Allow a checkpoint to run its own code."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 28 * 28:
                raise ValueError(f"{name} must be at least one 28x28 block (784), got {value}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PolicySettings":
        return cls(**{k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__})

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def processor_kwargs(self) -> dict[str, int]:
        """The pixel bounds that are set, as the processor's (and vLLM's mm_processor_kwargs) keywords."""
        return {k: v for k, v in (("min_pixels", self.min_pixels), ("max_pixels", self.max_pixels)) if v is not None}

    def load_processor(self, name_or_path: str | Path):
        """The checkpoint's processor with these bounds as its image size (vLLM's Qwen2-VL processor
        maps `mm_processor_kwargs` min/max_pixels onto the same two edges)."""
        from skinr1.models.loading import load_processor

        processor = load_processor(name_or_path, trust_remote_code=self.trust_remote_code)
        if self.processor_kwargs():
            # Set on the image processor, not passed as call-time min/max_pixels: transformers
            # deprecates those (removal in 5.23) and warns on every call.
            from transformers.image_utils import SizeDict

            image_processor = processor.image_processor
            size = {k: v for k, v in dict(image_processor.size).items() if v is not None}
            size.update({edge: value for edge, value in (("shortest_edge", self.min_pixels), ("longest_edge", self.max_pixels))
                         if value is not None})
            image_processor.size = SizeDict(**size)
        return processor

    def load_policy(self, name_or_path: str | Path, adapter: str | Path | None = None):
        from skinr1.models.loading import load_policy

        return load_policy(name_or_path, dtype=self.dtype, trust_remote_code=self.trust_remote_code, adapter=adapter)

    def load_image(self, path_or_bytes, **kwargs: Any):
        """Decode and resize to the bounds (nothing is resized when both are None: the processor
        then resizes with the checkpoint's own bounds, exactly as before these settings existed)."""
        from skinr1.data.images import load_image

        return load_image(path_or_bytes, min_pixels=self.min_pixels, max_pixels=self.max_pixels, **kwargs)

    def fed_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of this size after `load_image` (what the processor sees)."""
        if self.min_pixels is None and self.max_pixels is None:
            return height, width
        from skinr1.data.images import pixel_bounds_size

        return pixel_bounds_size(height, width, self.min_pixels, self.max_pixels)


def image_token_count(processor, height: int, width: int) -> int:
    """Language-model tokens the processor expands one image of this (fed) size into: its patch
    count through the processor's own resize rule, merged 2x2. vLLM asks the same processor method."""
    patches = processor.image_processor.get_number_of_image_patches(height, width, {})
    merge = getattr(processor.image_processor, "merge_size", MERGE_SIZE)
    return patches // (merge * merge)


def prompt_token_count(processor, settings: PolicySettings, prompt: str, image_size: tuple[int, int]) -> int:
    """Tokens of a prompt with one unexpanded image placeholder once its image (`(width, height)`
    as stored) is expanded: the text's tokens, minus the placeholder, plus the image's tokens."""
    width, height = image_size
    text_tokens = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return text_tokens - 1 + image_token_count(processor, *settings.fed_size(height, width))
