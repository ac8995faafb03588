"""`skinr1 pipeline --config FILE [key=value ...] [--fresh]`: the whole recipe, stage by stage.

tiny model (or the configured base) -> data -> trajectories -> SFT -> GRPO -> evaluation of the
base, SFT and RL checkpoints on the held-out sets. Finished stages are reused unless --fresh.
"""

from __future__ import annotations

import argparse
import time

from skinr1.cli.common import add_config_arguments, load_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipeline", help="run every stage: trajectories, SFT, GRPO, evaluation")
    add_config_arguments(parser, default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)
    run_pipeline(load_config_from_args(args), args.fresh)
    return 0


def run_pipeline(config, fresh: bool) -> dict:
    """Run (or reuse) every stage; print the summary table, stage wall times and report paths."""
    from skinr1.data.records import write_text_atomic
    from skinr1.eval.report import format_comparisons, format_table
    from skinr1.pipeline import stages

    timings: dict[str, float] = {}

    def timed(name, fn, *a, **k):
        started = time.perf_counter()
        result = fn(*a, **k)
        timings[name] = time.perf_counter() - started
        return result

    base = timed("base model", stages.base_model_stage, config, fresh)
    data_dir = timed("data", stages.data_stage, config, fresh)
    sft_data = timed("trajectories", stages.trajectories_stage, config, data_dir, fresh)
    sft = timed("sft", stages.sft_stage, config, base, sft_data, fresh)
    rl = timed("rl", stages.rl_stage, config, base, sft, data_dir, fresh)
    report = timed("eval", stages.eval_stage, config, {"base": base, "sft": str(sft), "rl": str(rl)}, data_dir, fresh)
    eval_dir = config.run_path / "eval"
    wall = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    # Reused stages take ~0 s: the times describe this invocation, and are kept next to the report.
    write_text_atomic(eval_dir / "stage_times.txt", wall + "\n")
    print("\n" + format_table(report))
    print("\npaired differences on the same images (95% bootstrap CI):\n" + format_comparisons(report))
    print(f"\nstage wall times: {wall}")
    print(f"reports: {eval_dir / 'report.md'}, {eval_dir / 'report.json'}, figure {eval_dir / 'report.png'}")
    return report
