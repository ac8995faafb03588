"""`skinr1 demo [--out DIR] [--fresh] [key=value ...]`: the embedded demo on a laptop.

The whole recipe on the bundled demo config: local Ray, a tiny random-weight Qwen2.5-VL, the
synthetic dataset, label harmonization, trajectories, SFT, GRPO and the evaluation report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded demo end to end (tiny model, synthetic data)")
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--fresh", action="store_true", help="recompute every stage, discarding finished results and unfinished checkpoints")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="demo config overrides, e.g. rl.steps=10")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from skinr1.cli.common import load_config_from_args
    from skinr1.cli.pipeline_cmd import run_pipeline
    from skinr1.pipeline.harmonization import format_overview, harmonization_overview
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)
    args.config, args.command = str(DEMO_CONFIG), "demo"
    args.overrides = [*args.overrides, f"run_dir={Path(args.out).resolve()}"]
    config = load_config_from_args(args)
    print("label harmonization onto the SkinR1 taxonomy:")
    print(format_overview(harmonization_overview(config.run_path / "harmonization")))
    run_pipeline(config, args.fresh)
    return 0
