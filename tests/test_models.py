"""The tiny Qwen2.5-VL: built locally, loads in transformers and vLLM, generates for an image."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from skinr1.models.loading import resolve_model_source


def _image() -> Image.Image:
    return Image.new("RGB", (64, 64), (180, 90, 70))


def test_tiny_model_files_are_hugging_face_format(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] == 64  # vLLM CPU attention needs 64
    assert sum(text["rope_parameters"]["mrope_section"]) == 32


def test_tiny_model_generates_in_transformers(tiny_model_dir):
    import torch

    from skinr1.models import load_policy, load_processor

    processor = load_processor(tiny_model_dir)
    model = load_policy(tiny_model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the diagnosis?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[_image()], return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    merge = model.config.vision_config.spatial_merge_size
    assert image_tokens == int(inputs["image_grid_thw"].prod()) // merge**2
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 8 or out[0, -1] == model.generation_config.eos_token_id


def test_tokenizer_round_trips_taxonomy_text(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "<thinking>An irregular dark lesion.</thinking><final diagnosis>melanoma (malignant)</final diagnosis>"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode("melanoma")) <= 2  # domain words are single merges, keeping sequences short


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_source(tmp_path / "empty")
    assert resolve_model_source("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.mark.slow
def test_tiny_model_generates_in_vllm(tiny_model_dir):
    from vllm import SamplingParams

    from rollout.engine import EngineSettings, build_llm

    llm = build_llm(str(tiny_model_dir), EngineSettings(max_model_len=512))
    try:
        prompt = (
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the diagnosis?<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        outputs = llm.generate(
            [{"prompt": prompt, "multi_modal_data": {"image": _image()}}],
            SamplingParams(max_tokens=16, temperature=1.0, logprobs=0, seed=0),
        )
        completion = outputs[0].outputs[0]
        assert len(completion.token_ids) > 0
        assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)
    finally:
        del llm
