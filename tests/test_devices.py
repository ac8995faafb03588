"""Devices and dtypes: batches follow the engine, GPU runs never fall back to the CPU silently, merged
weights keep the model's dtype (fast, CPU)."""

from __future__ import annotations

import pytest
import torch

from learner.devices import check_placement, module_device, require_accelerator, to_device


def test_to_device_moves_every_tensor_and_keeps_dtypes():
    batch = {"model_inputs": {"input_ids": torch.ones(2, 3, dtype=torch.long), "pixel_values": torch.zeros(4, 8)},
             "mask": torch.ones(2, 2), "old_logprobs": None, "pairs": [torch.zeros(1), (torch.ones(1), 3)]}
    moved = to_device(batch, torch.device("meta"))
    assert moved["model_inputs"]["input_ids"].device.type == "meta"
    assert moved["model_inputs"]["input_ids"].dtype == torch.long and moved["mask"].dtype == torch.float32
    assert moved["old_logprobs"] is None and moved["pairs"][1][1] == 3 and moved["pairs"][1][0].device.type == "meta"


def test_a_placement_other_than_the_configured_one_fails_loudly():
    check_placement(torch.device("cpu"), use_gpu=False, what="x")
    with pytest.raises(RuntimeError, match="placed the model on cpu but use_gpu=true"):
        check_placement(torch.device("cpu"), use_gpu=True, what="learner")
    with pytest.raises(RuntimeError, match="DS_ACCELERATOR=cpu"):
        check_placement("cuda:0", use_gpu=False, what="learner")
    assert module_device(torch.nn.Linear(2, 2)).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_use_gpu_without_cuda_refuses_to_train_on_the_cpu():
    require_accelerator(False, "x")
    with pytest.raises(RuntimeError, match="refusing to train on the CPU"):
        require_accelerator(True, "learner rank 0")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_merged_weights_are_written_in_the_model_dtype(tiny_model_dir, tmp_path, dtype):
    from safetensors import safe_open

    from learner.export import merge_adapter
    from learner.lora import LoraSettings, apply_lora
    from skinr1.models.settings import PolicySettings

    adapter = tmp_path / "adapter"
    apply_lora(PolicySettings().load_policy(tiny_model_dir), LoraSettings(rank=4, alpha=8, dropout=0.0)).save_pretrained(adapter)
    merged = merge_adapter(adapter, tmp_path / f"merged-{dtype}", base=str(tiny_model_dir),
                           policy=PolicySettings(dtype=dtype, max_pixels=200704))
    with safe_open(merged / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_tensor(name).dtype for name in weights.keys()}
    assert dtypes == {getattr(torch, dtype)}
    # The saved processor carries the run's bound (an engine loading the merged model gets it too).
    from skinr1.models.loading import load_processor

    assert load_processor(merged).image_processor.size["longest_edge"] == 200704
