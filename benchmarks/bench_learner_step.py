"""The GRPO learner group's step on one fixed batch: Ray, DeepSpeed ranks, no rollout.

    python benchmarks/bench_learner_step.py [--size medium] [--demo-run runs/demo] [--steps 4] [--rounds 2]
        [--micro-batch 4] [--score-micro-batch 16] [--learner-ranks 2] [--dtype float32] [--variant NAME=KEY=VALUE[,KEY=VALUE...] ...]

In `bench_vs_trl.py` a step's learning time moves with what the policy happened to sample (its
completions' lengths) as much as with the learner's settings. Here every variant trains on the same
samples: the workload's images and prompts, G completions per image cut from real text at seeded
lengths (a quarter to all of --max-tokens), seeded advantages. Each variant starts its own learner
group (the demo's layout: DeepSpeed ranks on a loopback Ray node), trains one warm-up step and
--steps timed ones; variants take turns for --rounds rounds, so a drift of the machine touches
them alike.

Prints, per variant, the learner seconds of every timed step (the slowest rank's `train_step`, as
the GRPO driver reports it) and their median.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

TEXT = ("The lesion is a well demarcated erythematous plaque with silvery scale on the extensor surface. "
        "Category: inflammatory. Group: papulosquamous. The differential diagnosis includes eczema, tinea "
        "corporis and lichen planus; the symmetric distribution and the scale favour psoriasis. ")
"""What completions are cut from: real tokens (never a vision special token)."""


def fixed_samples(workload, processor, seed: int):
    """The workload's first step of images as train samples: prompts as SkinR1 asks them, G
    completions each of seeded lengths, seeded advantages."""
    from learner.policy_batch import TrainSample
    from skinr1.prompts.questions import make_question

    rng = random.Random(seed)
    tokens = processor.tokenizer.encode(TEXT * 40)
    samples = []
    for record in workload.records[: workload.prompts]:
        question = make_question(processor.tokenizer, record["record_id"], record["image"], record["node_id"], "open",
                                 include_system_prompt=False, seed=seed)
        for _ in range(workload.group_size):
            length = rng.randint(max(1, workload.max_tokens // 4), workload.max_tokens)
            start = rng.randrange(len(tokens) - length)
            samples.append(TrainSample(question.prompt, record["image"], tokens[start : start + length],
                                       [-1.0] * length, rng.gauss(0.0, 1.0)))
    return samples


def run_config(workload, overrides: list[str]):
    """The demo's GRPO config at the workload's settings (as `bench_vs_trl.py` runs SkinR1), plus a
    variant's overrides."""
    from bench_workload import skinr1_runtime

    return skinr1_runtime(workload, overrides)


def time_variant(workload, samples, overrides: list[str], steps: int) -> list[float]:
    """Learner seconds of `steps` timed steps (after one warm-up) of a fresh learner group."""
    from learner.group import LearnerGroup
    from skinr1.pipeline.rl_batch import step_size

    runtime = run_config(workload, overrides)
    group = LearnerGroup(workload.model, runtime.rl, seed=workload.seed, policy=runtime.policy)
    size = step_size(samples, runtime.rl.loss.aggregation)
    try:
        # The first step is the warm-up; each report's learner_s is its slowest rank's.
        return [group.train_step(samples, size)["learner_s"] for _ in range(steps + 1)][1:]
    finally:
        group.shutdown()


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"a variant is NAME=KEY=VALUE[,KEY=VALUE...] or NAME=, got {text!r}")
    return name, [s for s in settings.split(",") if s]


def main(argv=None) -> int:
    from bench_workload import Workload, build_data, build_model, select_records
    from skinr1.cluster import init_ray, shutdown_ray
    from skinr1.models.settings import PolicySettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "medium"), default="medium")
    parser.add_argument("--demo-run", type=Path, default=ROOT / "runs" / "demo",
                        help="a finished demo run: its SFT policy (tiny) and data")
    parser.add_argument("--prompts", type=int, default=8, help="images per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64, help="longest completion")
    parser.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass")
    parser.add_argument("--score-micro-batch", type=int, default=16,
                        help="SkinR1's (and the floor's) samples per no-grad scoring pass, a multiple of --micro-batch")
    parser.add_argument("--learner-ranks", type=int, default=2, help="DeepSpeed ranks")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="turns each variant takes")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="NAME=KEY=VALUE[,KEY=VALUE...]: SkinR1 settings of one variant (repeatable; NAME= for the defaults)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/skinr1-bench-learner"))
    args = parser.parse_args(argv)
    variants = args.variant or [("demo", [])]
    if len({name for name, _ in variants}) != len(variants):
        parser.error("variant names must differ")

    args.work.mkdir(parents=True, exist_ok=True)
    demo_run = args.demo_run if args.demo_run.is_dir() else None
    model, origin = build_model(args.size, args.work, demo_run)
    data = build_data(args.work, demo_run)
    workload = Workload(size=args.size, model=model, model_origin=origin, data_dir=data, prompts=args.prompts,
                        group_size=args.group_size, max_tokens=args.max_tokens, micro_batch=args.micro_batch, score_micro_batch=args.score_micro_batch,
                        learner_ranks=args.learner_ranks, dtype=args.dtype)
    workload.records = select_records(Path(data), workload.prompts)
    samples = fixed_samples(workload, PolicySettings().load_processor(model), workload.seed)
    tokens = sum(len(s.completion_ids) for s in samples)
    print(f"[{args.size}] {model} ({origin}); {len(samples)} samples, {tokens} completion tokens, {args.dtype}; "
          f"{args.rounds} round(s) of 1 warm-up + {args.steps} timed steps per variant", flush=True)
    timings: dict[str, list[float]] = {name: [] for name, _ in variants}
    init_ray(num_cpus=8, log_to_driver=False)  # the ranks' framework logs stay in Ray's session logs
    try:
        for round_index in range(args.rounds):
            for name, overrides in variants:
                started = time.perf_counter()
                seconds = time_variant(workload, samples, overrides, args.steps)
                timings[name] += seconds
                print(f"  round {round_index + 1} {name}: {' '.join(f'{s:.2f}' for s in seconds)} s "
                      f"({time.perf_counter() - started:.0f} s wall)", flush=True)
    finally:
        shutdown_ray()
    print("\n| variant | settings | learner s/step (median) | min | max |\n|---|---|---|---|---|")
    for name, overrides in variants:
        values = timings[name]
        print(f"| {name} | {' '.join(overrides) or 'demo'} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
