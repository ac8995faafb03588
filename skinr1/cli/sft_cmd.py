"""`skinr1 sft --config FILE [key=value ...]`: the SFT warm start (builds missing inputs first)."""

from __future__ import annotations

import argparse

from skinr1.cli.common import add_config_arguments, load_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sft", help="SFT warm start on verified trajectories (Ray Train + DeepSpeed + LoRA)")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skinr1.pipeline import stages
    from skinr1.versions import check_versions

    check_versions()
    config = load_config_from_args(args)
    base = stages.base_model_stage(config)
    data_dir = stages.data_stage(config)
    sft_data = stages.trajectories_stage(config, data_dir)
    final = stages.sft_stage(config, base, sft_data, fresh=args.fresh)
    print(f"SFT policy: {final}")
    return 0
