"""benchmarks/bench_learner_step.py: two variants of a tiny learner group train the same fixed batch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_each_variant_trains_the_fixed_batch_and_gets_a_row(tmp_path):
    """A random tiny model and a small synthetic set (no demo run); one rank, 2 images x G=2."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_learner_step.py"), "--size", "tiny",
         "--demo-run", str(tmp_path / "no-demo"), "--work", str(tmp_path / "work"), "--prompts", "2", "--group-size", "2",
         "--max-tokens", "8", "--micro-batch", "2", "--learner-ranks", "1", "--steps", "2", "--rounds", "1",
         "--variant", "zero1=", "--variant", "zero2=rl.learner.deepspeed.zero_stage=2"],
        capture_output=True, text=True, cwd=ROOT, timeout=580)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "4 samples" in out
    for name, settings in (("zero1", "demo"), ("zero2", "rl.learner.deepspeed.zero_stage=2")):
        assert re.search(rf"round 1 {name}: \d+\.\d\d \d+\.\d\d s", out), out  # two timed steps
        assert re.search(rf"\| {name} \| {re.escape(settings)} \| \d+\.\d\d \| \d+\.\d\d \| \d+\.\d\d \|", out), out


def test_a_variant_needs_a_name():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_learner_step.py"), "--variant", "=rl.seed=1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2 and "a variant is NAME=KEY=VALUE" in run.stderr
