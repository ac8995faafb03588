"""GPU check, level 2: the whole GRPO loop on one CUDA machine, with Ray and CUDA vLLM.

`python -m skinr1.gpu_check_level2 [--dtype bfloat16|float32] [--out DIR]` (or scripts/gpu_check.sh)

Two GRPO steps of the real driver (rollout actor with vLLM, reward actor, DeepSpeed learner rank,
weight sync after each step) on the tiny model with Qwen2.5-VL's real processor bounds and
model.max_pixels=200704, then two checks:
- after the sync, the engine serves the learner's policy: the engine's log-probs of fresh samples
  match the learner's within `logprob_tolerance(dtype)` (mean over tokens; also checked during
  training, where `ratio_gap` is the same gap on the trained samples);
- a real photograph (600x450, 1024x768, 3000x2000; portrait and landscape) costs vLLM exactly as
  many prompt tokens as the learner's processor gives it (<= 256 image tokens each).
On one GPU the learner rank and the rollout engine share it (fractional Ray GPUs).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

SIZES = [(600, 450), (450, 600), (1024, 768), (2000, 3000)]


def logprob_tolerance(dtype: str) -> float:
    """Largest mean per-token |engine - learner| log-prob gap that still means "the same policy".

    bf16 keeps 8 significant bits (unit roundoff 2^-8 ~ 0.4%): logits of magnitude ~10 carry
    rounding errors of ~0.04 in each engine, and vLLM's fused kernels accumulate in another order
    than the learner's, so per-token log-probs differ by ~1e-2 on average (verl and OpenRLHF report
    1e-2 to 3e-2 mean gaps for bf16 models). 0.05 leaves room for that and is still far below the gap
    to a stale policy after a learning step (>0.1). float32 agrees to ~1e-6 on CPU (README): 1e-3.
    """
    return {"bfloat16": 0.05, "float16": 0.02, "float32": 1e-3}[dtype]


def level2_overrides(run_dir: str, model: str, dtype: str, gpus: int) -> list[str]:
    """The demo config turned into a 2-step GPU run on `gpus` GPUs (pure; unit-tested)."""
    share = 0.5 if gpus < 2 else 1.0  # one GPU: learner and engine share it
    return [
        f"run_dir={run_dir}", f"model.name_or_path={model}", f"model.dtype={dtype}", "model.max_pixels=200704",
        "data.synthetic_scale=0.1", "rl.steps=2", "rl.probe_every=0", "rl.validate_every=0", "rl.init_from_sft=false",
        "rl.prompts_per_step=4", "rl.learner.num_ranks=1", "rl.learner.micro_batch_size=4", "rl.learner.use_gpu=true",
        f"rl.learner.gpus_per_rank={share}", "rl.rollout.num_workers=1", "rl.rollout.min_workers=1",
        "rl.rollout.max_workers=1", f"rl.rollout.resources.num_gpus={share}", "rl.rollout.gpu_memory_utilization=0.3",
    ]


def _gap(rows_a: list[list[float]], rows_b: list[list[float]]) -> float:
    gaps = [abs(a - b) for ra, rb in zip(rows_a, rows_b) for a, b in zip(ra, rb)]
    return statistics.fmean(gaps)


def run_level2(dtype: str = "bfloat16", out_dir: str | None = None) -> dict[str, Any]:
    import torch
    from PIL import Image

    from learner.policy_batch import TrainSample, encode_batch
    from rollout.sampling import RolloutRequest, SamplingSettings
    from skinr1.cluster import init_ray, shutdown_ray
    from skinr1.config.derive import rl_settings
    from skinr1.config.schema import load_run_config
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model
    from skinr1.pipeline import stages
    from skinr1.pipeline.rl_driver import GRPODriver
    from skinr1.prompts.questions import make_question

    if not torch.cuda.is_available():
        raise RuntimeError("level 2 needs CUDA")
    root = Path(out_dir or tempfile.mkdtemp(prefix="skinr1-level2-"))
    model = str(build_tiny_model(root / "model", TinyModelSpec.with_real_pixels()))
    configs = Path(__file__).resolve().parent / "configs"
    config = load_run_config(configs / "demo.yaml", level2_overrides(str(root / "run"), model, dtype, torch.cuda.device_count()))
    tolerance = logprob_tolerance(dtype)
    init_ray(num_cpus=8)
    report: dict[str, Any] = {"dtype": dtype, "tolerance": tolerance}
    driver = None
    try:
        data = stages.data_stage(config)
        runtime = rl_settings(config)
        driver = GRPODriver(runtime, config.reward, model, str(data / config.data.sparse), config.rl_dir, seed=config.seed,
                            include_system_prompt=config.trajectories.include_system_prompt)
        driver.start()
        rows = [driver.run_step() for _ in range(2)]
        report["steps"] = [{k: row[k] for k in ("loss", "kl", "ratio_gap", "reward_mean", "learn_s", "generate_s", "sync_s")}
                           for row in rows]
        for row in rows:
            assert row["trained"] and all(math.isfinite(row[k]) for k in ("loss", "kl", "ratio_gap")), row
            assert row["ratio_gap"] < tolerance, f"engine vs learner log-prob gap {row['ratio_gap']} >= {tolerance}"

        processor = runtime.policy.load_processor(model)
        photos, requests = [], []
        for width, height in SIZES:
            path = root / f"photo_{width}x{height}.jpg"
            Image.new("RGB", (width, height), (160, 110, 90)).save(path)
            question = make_question(processor.tokenizer, path.stem, str(path), "melanoma", "open",
                                     include_system_prompt=config.trajectories.include_system_prompt)
            photos.append(str(path))
            requests.append(RolloutRequest(path.stem, question.prompt, str(path)))
        # After the last sync (version 2): fresh samples, scored by the learner.
        results = driver.pool.generate(requests, runtime.rl.sampling, seed=11)
        samples = [TrainSample(r.prompt, r.image, s.token_ids, s.logprobs, 0.0) for r, res in zip(requests, results)
                   for s in res.samples]
        served = {res.policy_version for res in results}
        gap = _gap([s.rollout_logprobs for s in samples], driver.learners.policy_logprobs(samples))
        report.update(after_sync_gap=gap, served_versions=sorted(served))
        assert served == {driver.version} and gap < tolerance, (served, driver.version, gap)

        lengths = []
        for request, result in zip(requests, results):
            completion = result.samples[0].token_ids
            batch = encode_batch(processor, [TrainSample(request.prompt, request.image, completion, [0.0] * len(completion), 0.0)],
                                 runtime.policy)
            learner_prompt = batch["prompts"]["input_ids"].shape[1]
            engine_prompt = len(result.prompt_token_ids)
            lengths.append({"image": request.prompt_id, "engine": engine_prompt, "learner": learner_prompt,
                            "counted": driver.budget.prompt_tokens(request.prompt, request.image)})
            assert engine_prompt == learner_prompt == lengths[-1]["counted"], lengths[-1]
        report["prompt_lengths"] = lengths
    finally:
        if driver is not None:
            driver.shutdown()
        shutdown_ray()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float32", "float16"), default="bfloat16")
    parser.add_argument("--out", help="keep the run here (default: a temporary directory)")
    args = parser.parse_args(argv)
    report = run_level2(args.dtype, args.out)
    print(f"level 2 ({args.dtype}): PASS; after-sync log-prob gap {report['after_sync_gap']:.4g} (< {report['tolerance']})")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
