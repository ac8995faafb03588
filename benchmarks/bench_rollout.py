"""Rollout throughput: samples and completion tokens per second of the vLLM rollout pool.

    python benchmarks/bench_rollout.py --run-dir runs/demo [--actors 1 2] [--prompts 16] [--group-size 4]
        [--max-tokens 160] [--rounds 3] [--adapter RUN/rl/final]

Uses a finished demo run (`make demo`): its RL starting policy (`rl/policy_base/model`, the SFT
adapter merged) and the images of its sparse set, so completions have the trained policy's real
lengths. Each actor count starts a fresh pool on a local loopback Ray node; the first round warms
the engines and is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def requests_from(run_dir: Path, count: int, tokenizer):
    from rollout.sampling import RolloutRequest
    from skinr1.data.records import read_jsonl
    from skinr1.prompts.questions import make_question

    records = read_jsonl(run_dir / "data" / "sparse.jsonl")[:count]
    questions = [make_question(tokenizer, r.record_id, r.image, r.node_id, "open", include_system_prompt=False) for r in records]
    return [RolloutRequest(q.record_id, q.prompt, q.image) for q in questions]


def measure(pool, requests, sampling, rounds: int) -> dict[str, float]:
    pool.generate(requests, sampling, seed=0)  # warm-up: engine caches, first LoRA load
    seconds, samples, tokens = [], 0, 0
    for round_index in range(rounds):
        started = time.perf_counter()
        results = pool.generate(requests, sampling, seed=round_index + 1)
        seconds.append(time.perf_counter() - started)
        samples += sum(len(r.samples) for r in results)
        tokens += sum(len(s.token_ids) for r in results for s in r.samples)
    total = sum(seconds)
    return {"round_s": statistics.fmean(seconds), "samples_per_s": samples / total, "tokens_per_s": tokens / total,
            "tokens_per_sample": tokens / samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--adapter", type=Path, default=None,
                        help="serve this LoRA adapter on top (e.g. RUN/rl/final): what GRPO's actors do")
    args = parser.parse_args()
    model = args.run_dir / "rl" / "policy_base" / "model"
    if not (model / "config.json").is_file() or not (args.run_dir / "data" / "sparse.jsonl").is_file():
        sys.exit(f"{args.run_dir} is not a finished demo run (need rl/policy_base/model and data/sparse.jsonl): run `make demo`")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    from rollout.engine import EngineSettings
    from rollout.pool import ActorResources, RolloutPool
    from rollout.sampling import SamplingSettings
    from skinr1.cluster import init_ray, shutdown_ray
    from skinr1.models.loading import load_processor

    requests = requests_from(args.run_dir, args.prompts, load_processor(str(model)).tokenizer)
    sampling = SamplingSettings(group_size=args.group_size, temperature=1.0, max_tokens=args.max_tokens)
    init_ray(num_cpus=8)
    adapter = f", LoRA adapter {args.adapter}" if args.adapter else ", no adapter"
    print(f"{len(requests)} prompts x G={args.group_size}, up to {args.max_tokens} tokens, {args.rounds} rounds, {os.cpu_count()} cores{adapter}")
    print("| actors | s per round | samples/s | tokens/s | tokens/sample |")
    print("|---|---|---|---|---|")
    try:
        for actors in args.actors:
            engine = EngineSettings(max_model_len=1024, seed=0, enable_lora=args.adapter is not None)
            pool = RolloutPool(str(model), engine, actors, ActorResources(num_cpus=1),
                               initial_adapter=str(args.adapter) if args.adapter else None)
            try:
                r = measure(pool, requests, sampling, args.rounds)
            finally:
                pool.shutdown()
            print(f"| {actors} | {r['round_s']:.2f} | {r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['tokens_per_sample']:.0f} |", flush=True)
    finally:
        shutdown_ray()


if __name__ == "__main__":
    main()
