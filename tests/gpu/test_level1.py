"""Level-1 GPU check (the learner alone, in-process): on CPU in CI, on CUDA where there is one."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(device: str, dtype: str, tmp_path, **options):
    from skinr1.gpu_check import run_level1
    from skinr1.gpu_check_level2 import logprob_tolerance

    report = run_level1(device, dtype, tmp_path, **options)
    assert report["device"] == device and report["dtype"] == dtype
    assert report["rewarded_logprob"][1] > report["rewarded_logprob"][0]
    assert len(report["sft_losses"]) == 2 and len(report["grpo_losses"]) == 2
    assert report["shared_prompt_gap"]["mean"] < logprob_tolerance(dtype)
    return report


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_available(), reason="DeepSpeed picks one accelerator per process from the machine: on a CUDA machine the GPU variant runs")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_level1_on_cpu(tmp_path, dtype):
    """The same code path as on a GPU, device=cpu: float32 (the CPU demo's dtype) and bf16 (DeepSpeed's
    CPU accelerator supports it); 224x224 images (64 image tokens) keep it short on two cores."""
    report = _run("cpu", dtype, tmp_path, max_pixels=224 * 224)
    assert report["peak_gpu_memory_mb"] is None


@pytest.mark.skipif(not _cuda_available(), reason="level 1 on GPU needs CUDA; this machine has none (the CPU variant ran instead)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_level1_on_gpu(tmp_path, dtype):
    report = _run("cuda", dtype, tmp_path)
    assert report["peak_gpu_memory_mb"] > 0
