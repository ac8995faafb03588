"""benchmarks/bench_learner_forward.py on CPU with the tiny shapes: both ways run, agree, and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)


def test_the_forward_benchmark_reports_both_ways_and_their_agreement(tmp_path):
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_learner_forward.py"), "--device", "cpu", "--dtype", "float32",
         "--size", "tiny", "--prompts", "2", "--group-size", "2", "--completion", "8", "--image", "300x200",
         "--warmup", "0", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["rows"], report["completion_tokens"]) == (4, 8)
    assert report["image_tokens"] > 0 and report["prompt_tokens"] > report["image_tokens"]
    assert report["logprob_gap"]["max"] < 1e-4  # float32: the two ways differ by rounding only
    for way in ("shared", "full_rows"):
        assert len(report[way]["times_ms"]) == 1 and report[way]["median_ms"] > 0
    assert "shared is" in run.stdout and "| full_rows |" in run.stdout
