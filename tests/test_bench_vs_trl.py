"""benchmarks/bench_vs_trl.py: the summary and table logic, and (slow) one tiny run of every system."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_report import pool_rounds, ratios, skinr1_rows, speed_ratio, summarize, table  # noqa: E402
from bench_workload import Workload  # noqa: E402


def _row(step_s: float, samples: int = 64, tokens: int = 6400) -> dict:
    return {"step_s": step_s, "generate_s": step_s / 2, "scoring_s": 0.1, "reward_s": 0.01, "train_s": step_s / 2 - 0.11,
            "sync_s": 0.0, "wait_s": 0.0, "samples": samples, "trained_samples": samples, "tokens": tokens}


def test_summary_excludes_the_warmup_steps():
    result = {"system": "trl-hf", "status": "ok", "steps": [_row(100.0), _row(2.0), _row(4.0)], "peak_rss_gib": 1.5}
    summary = summarize(result, warmup=1)
    assert summary["measured_steps"] == 2
    assert summary["step_s"] == pytest.approx(3.0)
    assert summary["generated_per_s"] == pytest.approx(128 / 6.0)
    assert summary["tokens_per_s"] == pytest.approx(12800 / 6.0)
    assert summary["generate_s"] == pytest.approx(1.5)


def test_ratios_use_the_fastest_trl_mode_that_finished():
    summaries = [
        summarize({"system": "skinr1", "steps": [_row(6.0)]}, 0),
        summarize({"system": "trl-hf", "steps": [_row(4.0)]}, 0),
        summarize({"system": "trl-vllm", "status": "crashed", "error": "ValueError: boom", "steps": [_row(1.0)]}, 0),
        summarize({"system": "trl-vllm-patched", "steps": [_row(3.0)]}, 0),
        summarize({"system": "floor", "steps": [_row(2.0)]}, 0),
    ]
    r = ratios(summaries)
    assert r["best_trl"] == "trl-vllm-patched"  # the crashed mode's faster steps do not count
    assert r["skinr1_over_best_trl"] == pytest.approx(2.0)
    assert r["skinr1_over_floor"] == pytest.approx(3.0)


def test_the_overlapped_skinr1_gets_ratios_and_lines_of_its_own():
    summaries = [
        summarize({"system": "skinr1", "steps": [_row(6.0)]}, 0),
        summarize({"system": "skinr1-overlap", "steps": [_row(4.5)]}, 0),
        summarize({"system": "trl-hf", "steps": [_row(3.0)]}, 0),
        summarize({"system": "floor", "steps": [_row(5.0)]}, 0),
    ]
    r = ratios(summaries)
    assert r["skinr1_over_best_trl"] == pytest.approx(2.0) and r["overlap_over_best_trl"] == pytest.approx(1.5)
    assert r["overlap_over_floor"] == pytest.approx(0.9) and r["floor_share_of_overlap"] == pytest.approx(5.0 / 4.5)
    text = table("tiny", summaries)
    assert "SkinR1 with one-step overlap / best TRL mode (trl-hf): 1.50x step time" in text
    assert "SkinR1 with one-step overlap / raw-engine floor: 0.90x step time (the floor's step is 111% of SkinR1 with one-step overlap's)" in text
    assert "SkinR1 / raw-engine floor: 1.20x step time (the floor's step is 83% of SkinR1's)" in text
    assert "| skinr1-overlap | 4.50 |" in text and text.count("in train") == 2


def test_rounds_pool_every_measured_step_and_keep_a_crash():
    first = {"system": "skinr1", "steps": [_row(100.0), _row(2.0)], "peak_rss_gib": 1.0}
    second = {"system": "skinr1", "status": "ok", "steps": [_row(90.0), _row(4.0), _row(6.0)], "peak_rss_gib": 3.0}
    summary = summarize(pool_rounds([first, second], warmup=1), 0)  # each round's own warm-up step left out
    assert summary["measured_steps"] == 3 and summary["step_s"] == pytest.approx(4.0)
    assert summary["peak_rss_gib"] == 3.0 and summary["status"] == "ok"
    crashed = {"system": "skinr1", "status": "crashed", "crashed_at_step": 2, "error": "RuntimeError: x", "steps": [_row(9.0)]}
    pooled = pool_rounds([first, crashed], warmup=1)
    assert pooled["status"] == "crashed" and pooled["error"] == "round 2: RuntimeError: x" and pooled["crashed_at_step"] == 2


def test_speed_ratio_is_skinr1_over_the_best_trl_mode():
    skinr1 = summarize({"system": "skinr1", "steps": [_row(2.0)]}, 0)
    trl = summarize({"system": "trl-hf", "steps": [_row(5.0)]}, 0)
    assert speed_ratio([skinr1, trl]) == pytest.approx(2.5)
    assert speed_ratio([skinr1]) is None


def test_table_reports_a_crash_with_its_error():
    summaries = [
        summarize({"system": "skinr1", "steps": [_row(6.0)]}, 0),
        summarize({"system": "trl-vllm", "status": "crashed", "crashed_at_step": 7,
                   "error": "ValueError: Image features and image tokens do not match", "steps": []}, 0),
    ]
    text = table("tiny", summaries)
    assert "trl-vllm (crashed at step 7)" in text
    assert "Image features and image tokens do not match" in text
    assert "n/a" in text  # no TRL mode finished: no ratio is made up


def test_skinr1_metrics_rows_map_onto_the_common_breakdown():
    metrics = [{"step_s": 8.0, "generate_s": 5.0, "reward_s": 0.01, "learn_s": 2.5, "sync_s": 0.3, "wait_s": 5.0,
                "samples": 64, "kept_groups": 16, "trained": True, "completion_len_mean": 120.5}]
    (row,) = skinr1_rows(metrics, group_size=4)
    assert row["train_s"] == 2.5 and row["scoring_s"] is None
    assert row["trained_samples"] == 64 and row["tokens"] == round(64 * 120.5)


def test_workload_rejects_a_batch_the_learners_cannot_split():
    with pytest.raises(ValueError, match="micro_batch"):
        Workload(size="tiny", model="m", model_origin="o", data_dir="d", prompts=3, group_size=2, micro_batch=4)
    with pytest.raises(ValueError, match="size"):
        Workload(size="huge", model="m", model_origin="o", data_dir="d")
    with pytest.raises(ValueError, match="dtype must be float32 or bfloat16"):
        Workload(size="tiny", model="m", model_origin="o", data_dir="d", dtype="float16")
    with pytest.raises(ValueError, match="score_micro_batch \\(6\\) must be a positive multiple of micro_batch \\(4\\)"):
        Workload(size="tiny", model="m", model_origin="o", data_dir="d", score_micro_batch=6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_workload_precision_reaches_skinr1_and_the_stated_settings(tmp_path, dtype):
    from bench_vs_trl import parse_args, settings_not_equal, skinr1_command

    workload = Workload(size="tiny", model="m", model_origin="o", data_dir="d", dtype=dtype,
                        skinr1_settings=["model.dtype=float16"])
    command = skinr1_command(workload, tmp_path / "run")
    assert f"model.dtype={dtype}" in command
    # SkinR1's own extra settings come after the shared ones (and so win), as for every other key.
    assert command.index(f"model.dtype={dtype}") < command.index("model.dtype=float16")
    precision = settings_not_equal(parse_args(["--dtype", dtype]))[1]
    if dtype == "bfloat16":
        assert "every system loads bfloat16 weights" in precision and "TRL with bf16=True" in precision
    else:
        assert "every system trains in float32" in precision and "TRL's vLLM engine runs bfloat16" in precision


def test_the_stated_settings_name_the_zero_stage_and_the_compilation_skinr1_runs():
    from bench_vs_trl import parse_args, settings_not_equal

    stated = settings_not_equal(parse_args([]))  # the demo config's
    assert "2 DeepSpeed ZeRO-1 rank(s)" in stated[0] and "vLLM engines run compiled (rl.rollout.enforce_eager=false)" in stated[3]
    stated = settings_not_equal(parse_args(["--skinr1-set", "rl.learner.deepspeed.zero_stage=2",
                                            "--skinr1-set", "rl.rollout.enforce_eager=true"]))
    assert "2 DeepSpeed ZeRO-2 rank(s)" in stated[0] and "rl.learner.deepspeed.zero_stage=2" in stated[0]
    assert "vLLM engines run eagerly (rl.rollout.enforce_eager=true)" in stated[3]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason='TRL is not installed (pip install -e ".[dev]" or ".[bench]")')
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_run_prints_the_table_and_the_ratios(tmp_path, dtype):
    """2 steps (1 warm-up) of 2 images x G=2 on a random tiny model and a small synthetic set, in
    each precision the script offers (bfloat16: DeepSpeed's bf16 mode, TRL's bf16=True, bf16 engines)."""
    systems = ("skinr1", "trl-hf", "floor")
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_vs_trl.py"), "--sizes", "tiny", "--steps", "1", "--warmup", "1",
               "--dtype", dtype, "--rounds", "2" if dtype == "float32" else "1",
               "--prompts", "2", "--group-size", "2", "--max-tokens", "16", "--micro-batch", "2", "--rollout-workers", "1",
               "--learner-ranks", "1", "--demo-run", str(tmp_path / "no-demo"), "--work", str(tmp_path / "work"),
               "--systems", ",".join(systems)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for system in systems:
        assert f"| {system} |" in out, out  # finished its steps (a crash reads "| name (crashed at step N) |")
    assert "SkinR1 / best TRL mode (trl-hf):" in out and "SkinR1 / raw-engine floor:" in out
    assert "Settings that could not be made equal:" in out
    assert f"KL 0.02, {dtype}, 1 update/step" in out
    if dtype == "float32":  # two rounds: each system ran twice, and the ratio is given round by round
        for system in systems:
            assert f"round 2 {system}: ok" in out, out
        assert re.search(r"round by round: \d+\.\d\dx, \d+\.\d\dx", out), out
    assert (tmp_path / "work" / "report.json").is_file()
