"""Pure pieces of the learners: data order, LR schedule, DeepSpeed config, LoRA targets, SFT encoding."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from learner.data_order import BatchLayout, epoch_order, rank_micro_batches, step_indices
from learner.lora import LoraSettings
from learner.optim import DeepSpeedSettings, deepspeed_config, warmup_cosine_factor
from learner.sft_data import IGNORE_INDEX, SFTDataError, collate, read_sft_records


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_order(50, seed=3, epoch=0), epoch_order(50, seed=3, epoch=0)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=0))


def test_ranks_partition_each_step_without_overlap():
    layout = BatchLayout(num_samples=37, micro_batch_size=2, world_size=3, grad_accum_steps=2)
    assert layout.global_batch_size == 12 and layout.steps_per_epoch == 3
    seen: list[int] = []
    for step in range(layout.steps_per_epoch):
        per_rank = [sum(rank_micro_batches(layout, 0, step, r), []) for r in range(3)]
        flat = sum(per_rank, [])
        assert sorted(flat) == sorted(step_indices(layout, 0, step).tolist())
        assert len(set(flat)) == 12
        seen += flat
    assert len(set(seen)) == 36  # one epoch visits 36 distinct samples; the 37th waits for a full batch


def test_resume_recomputes_the_same_batches():
    layout = BatchLayout(num_samples=20, micro_batch_size=1, world_size=2, grad_accum_steps=2)
    straight = [rank_micro_batches(layout, 7, s, 1) for s in range(12)]
    resumed = [rank_micro_batches(layout, 7, s, 1) for s in range(6, 12)]
    assert straight[6:] == resumed


def test_layout_rejects_bad_sizes():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        BatchLayout(num_samples=3, micro_batch_size=2, world_size=2, grad_accum_steps=1)
    with pytest.raises(ValueError, match="world_size"):
        BatchLayout(num_samples=3, micro_batch_size=1, world_size=0, grad_accum_steps=1)


def test_warmup_cosine_schedule():
    factors = [warmup_cosine_factor(s, total_steps=100, warmup_steps=10) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # decays monotonically
    assert factors[-1] < 0.01
    assert warmup_cosine_factor(99, 100, 0, min_ratio=0.2) >= 0.2


def test_deepspeed_config_sizes_and_offload():
    config = deepspeed_config(DeepSpeedSettings(zero_stage=3, offload_optimizer=True, bf16="false"), 2, 4, 2, 1e-5, 0.0)
    assert config["train_batch_size"] == 16
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["bf16"]["enabled"] is False
    with pytest.raises(ValueError, match="zero_stage"):
        DeepSpeedSettings(zero_stage=4)


def test_lora_targets_language_projections_and_merger_only():
    pattern = re.compile(LoraSettings().target_regex())
    assert pattern.fullmatch("model.language_model.layers.0.self_attn.q_proj")
    assert pattern.fullmatch("model.language_model.layers.3.mlp.down_proj")
    assert pattern.fullmatch("model.visual.merger.mlp.0")
    assert not pattern.fullmatch("model.visual.blocks.0.mlp.gate_proj")  # same name in the vision tower
    assert not pattern.fullmatch("model.visual.blocks.0.attn.qkv")
    assert not pattern.fullmatch("lm_head")
    no_merger = re.compile(LoraSettings(vision_merger=False).target_regex())
    assert not no_merger.fullmatch("model.visual.merger.mlp.0")
    with pytest.raises(ValueError):
        LoraSettings(dropout=1.0)


def test_read_sft_records_names_the_bad_line(tmp_path):
    good = {"id": "a", "image": "x.png", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(SFTDataError, match=":2: malformed"):
        read_sft_records(path)
    bad_role = dict(good, messages=[{"role": "user", "content": "q"}])
    path.write_text(json.dumps(bad_role) + "\n")
    with pytest.raises(SFTDataError, match="assistant"):
        read_sft_records(path)


def test_collate_pads_and_masks():
    import torch

    examples = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7], "mm_token_type_ids": [1, 0, 0],
         "pixel_values": torch.ones(4, 3), "image_grid_thw": torch.tensor([[1, 2, 2]])},
        {"input_ids": [8], "labels": [8], "mm_token_type_ids": [1], "pixel_values": torch.zeros(4, 3),
         "image_grid_thw": torch.tensor([[1, 2, 2]])},
    ]
    batch = collate(examples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["mm_token_type_ids"].tolist() == [[1, 0, 0], [1, 0, 0]]
    assert batch["pixel_values"].shape == (8, 3) and batch["image_grid_thw"].shape == (2, 3)


def test_encode_record_labels_only_the_assistant(tiny_model_dir, tmp_path):
    from PIL import Image

    from learner.sft_data import SFTRecord, encode_record
    from skinr1.models.loading import load_processor

    image = tmp_path / "i.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(image)
    answer = "<thinking>dark</thinking><final diagnosis>melanoma (malignant)</final diagnosis>"
    record = SFTRecord("r", str(image), [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the diagnosis?"}]},
        {"role": "assistant", "content": answer},
    ])
    processor = load_processor(tiny_model_dir)
    encoded = encode_record(processor, record, max_length=512)
    supervised = [t for t, l in zip(encoded["input_ids"], encoded["labels"]) if l != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == answer + "<|im_end|>"
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_token in encoded["input_ids"] and image_token not in supervised
    # Image tokens are marked, so training uses the same 3-D positions as vLLM and generate().
    marked = [t for t, kind in zip(encoded["input_ids"], encoded["mm_token_type_ids"]) if kind]
    assert marked and set(marked) == {image_token}
    with pytest.raises(SFTDataError, match="exceed max_length"):
        encode_record(processor, record, max_length=10)
    broken = SFTRecord("b", str(tmp_path / "missing.png"), record.messages)
    with pytest.raises(SFTDataError, match="missing.png"):
        encode_record(processor, broken, max_length=512)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lora_factors_merge_elsewhere_exactly_as_peft_merges(tiny_model_dir, dtype):
    """What a rollout actor merges (rl.lora_sync=merged_on_rollout) from the factors and its copy of
    the base equals, bit for bit, PEFT's own delta and the learner's merged weights."""
    import torch

    from learner.lora import (apply_lora, base_weights, checkpoint_name, lora_delta, lora_factors, merge_lora_factors,
                              merged_weights)
    from skinr1.models.settings import PolicySettings

    torch.manual_seed(0)
    model = apply_lora(PolicySettings(dtype=dtype).load_policy(str(tiny_model_dir)), LoraSettings(rank=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # a trained adapter: B is zero after initialisation
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    factors = lora_factors(model)
    layers = {f"{name}.base_layer.weight": module for name, module in model.named_modules() if hasattr(module, "get_delta_weight")}
    assert len(factors) == len(layers) > 0
    for name, module in layers.items():
        assert torch.equal(lora_delta(*factors[checkpoint_name(name)]), module.get_delta_weight("default"))
    # The actor's copies of the base, as they arrive through the object store.
    base = [(name, tensor.clone()) for name, tensor in base_weights(model)]
    elsewhere = dict(merge_lora_factors(base, {k: (a.clone(), b.clone(), s) for k, (a, b, s) in factors.items()}))
    here = dict(merged_weights(model))
    assert set(elsewhere) == set(here) and all(torch.equal(elsewhere[k], here[k]) for k in here)
    assert all(t.dtype == getattr(torch, dtype) for t in elsewhere.values())
    with pytest.raises(ValueError, match="the base does not have"):
        list(merge_lora_factors(base[:3], factors))


def test_lora_factors_refuse_adapters_they_cannot_rebuild():
    import torch
    from peft import LoraConfig, get_peft_model

    from learner.lora import lora_factors

    layers = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    plain = get_peft_model(layers, LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"]))
    assert sorted(lora_factors(plain)) == ["0.weight", "2.weight"]
    layers = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    dora = get_peft_model(layers, LoraConfig(r=2, lora_alpha=4, target_modules=["0"], use_dora=True))
    with pytest.raises(ValueError, match="plain LoRA"):
        lora_factors(dora)


def test_merged_weights_equal_peft_merge_and_leave_the_model_untouched(tiny_model_dir):
    import torch

    from learner.lora import apply_lora, checkpoint_name, merged_weights
    from skinr1.models.loading import load_policy

    assert checkpoint_name("base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight") == (
        "model.language_model.layers.0.self_attn.q_proj.weight")
    torch.manual_seed(0)
    model = apply_lora(load_policy(str(tiny_model_dir)), LoraSettings(rank=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # a trained adapter: B is zero after initialisation
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    merged = dict(merged_weights(model))
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # out of place
    reference = model.merge_and_unload().state_dict()
    assert set(merged) == set(reference)  # every base weight, under its checkpoint name; no adapter tensors
    base = load_policy(str(tiny_model_dir)).state_dict()
    changed = [name for name in merged if not torch.equal(merged[name], base[name])]
    assert any("q_proj" in name for name in changed) and any("visual.merger" in name for name in changed)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6)
