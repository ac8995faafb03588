"""The GPU checks' pure parts, and their behaviour on a machine without CUDA (fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_learner_path_imports_neither_ray_nor_vllm():
    """Level 1 runs on a bare CUDA image: importing the learner and the check must not need Ray or vLLM."""
    code = ("import sys, skinr1.gpu_check, learner.rank, learner.sft_worker, learner.policy_batch, learner.train_engine; "
            "print(sorted(m for m in ('ray', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_level2_settings_form_a_valid_gpu_run(tmp_path):
    from skinr1.config.derive import rl_settings
    from skinr1.config.schema import load_run_config
    from skinr1.gpu_check_level2 import level2_overrides, logprob_tolerance

    demo = ROOT / "skinr1" / "configs" / "demo.yaml"
    for gpus, share in ((1, 0.5), (2, 1.0)):
        config = load_run_config(demo, level2_overrides(str(tmp_path), "/models/tiny", "bfloat16", gpus))
        runtime = rl_settings(config)
        assert runtime.rl.learner.use_gpu and runtime.rl.learner.gpus_per_rank == share
        assert runtime.rl.rollout.resources.num_gpus == share and runtime.rl.steps == 2
        assert (runtime.engine.dtype, runtime.engine.max_pixels, runtime.policy.dtype) == ("bfloat16", 200704, "bfloat16")
    assert logprob_tolerance("float32") < logprob_tolerance("float16") < logprob_tolerance("bfloat16") <= 0.05


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the behaviour without CUDA")
def test_gpu_check_script_skips_clearly_without_cuda():
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.startswith("SKIP: no CUDA device"), out.stdout + out.stderr
    strict = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                            env={**env, "SKINR1_REQUIRE_GPU": "1"})
    assert strict.returncode == 1
