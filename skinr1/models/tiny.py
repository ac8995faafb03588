"""Build a random-weight tiny Qwen2.5-VL in Hugging Face format (config, safetensors, tokenizer,
processor, chat template) for the demo and the tests. It loads with `from_pretrained` and in vLLM.

The sizes respect what vLLM's CPU backend accepts: the language model's head_dim must be 64
(hidden 128 with 2 heads), and `mrope_section` must sum to head_dim / 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


QWEN25_VL_MIN_PIXELS = 56 * 56
"""Qwen2.5-VL's released preprocessor_config.json: min_pixels 3136."""
QWEN25_VL_MAX_PIXELS = 12845056
"""... and max_pixels 12845056 (= 16384 image tokens of 28x28 pixels)."""


@dataclass
class TinyModelSpec:
    """Sizes of the tiny policy. Defaults give ~1M parameters that forward in well under 0.1 s."""

    text_hidden_size: int = 128
    """Language-model width; 2 heads of 64 (vLLM's CPU attention needs head_dim 64)."""
    text_layers: int = 2
    """Decoder layers."""
    text_heads: int = 2
    """Attention heads (head_dim = text_hidden_size / text_heads = 64)."""
    text_kv_heads: int = 1
    """Grouped-query key/value heads."""
    text_intermediate_size: int = 384
    """MLP width of the language model."""
    vision_hidden_size: int = 64
    """Vision-encoder width."""
    vision_depth: int = 2
    """Vision-encoder blocks."""
    vision_heads: int = 2
    """Vision attention heads."""
    vision_intermediate_size: int = 128
    """Vision MLP width."""
    vocab_size: int = 2048
    """BPE vocabulary size (special tokens included)."""
    min_pixels: int = 112 * 112
    """Smallest image area the processor produces (multiples of 28 per side). Small images are
    upscaled to 16 merged image tokens: with fewer, a tiny language model barely attends to them."""
    max_pixels: int = 112 * 112
    """Largest image area; bigger inputs are resized down, keeping the aspect ratio."""
    output_init_std: float = 0.2
    """Init std of the (untied) output projection. LoRA leaves the head frozen; with the usual 0.02,
    logits of a random head span only a few units and no token can get more than ~1% probability,
    so adapter training stalls near a loss of 5 nats. 0.2 lets a frozen head express confident
    distributions."""
    seed: int = 0
    """Seed for the random weights."""

    @classmethod
    def with_real_pixels(cls, **sizes) -> "TinyModelSpec":
        """The tiny model with Qwen2.5-VL's released processor bounds instead of the demo's 112x112:
        images of real sizes then expand into as many tokens as they would for the 3B/7B models,
        which is what the run's model.min_pixels/max_pixels must control (the default 112x112 pin
        hides a missing bound)."""
        return cls(min_pixels=QWEN25_VL_MIN_PIXELS, max_pixels=QWEN25_VL_MAX_PIXELS, **sizes)


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write the tiny model to `out_dir` and return the path."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from skinr1.models.tokenizer import CHAT_TEMPLATE, tokenizer_corpus, train_tokenizer

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=spec.vocab_size)
    token_id = tokenizer.convert_tokens_to_ids
    head_dim = spec.text_hidden_size // spec.text_heads
    half = head_dim // 2
    # Qwen's 3-D rotary split (temporal, height, width), scaled from its [16, 24, 24] for head_dim 128.
    mrope_section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden_size,
            "intermediate_size": spec.text_intermediate_size,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": 4096,
            "max_window_layers": spec.text_layers,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    config.eos_token_id = token_id("<|im_end|>")
    config.pad_token_id = token_id("<|endoftext|>")
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, spec.output_init_std)
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.save_pretrained(out, safe_serialization=True)

    pixel_bounds = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    image_processor = Qwen2VLImageProcessor(size=pixel_bounds, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    video_processor = Qwen2VLVideoProcessor(size=pixel_bounds)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
