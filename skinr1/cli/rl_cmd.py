"""`skinr1 rl --config FILE [key=value ...]`: hierarchical GRPO (the Ray job's entrypoint).

Under `ray job submit` it joins the job's cluster ($RAY_ADDRESS); locally it starts a loopback
node. Missing inputs (base model, data, trajectories, SFT) are built first and reused when done.
"""

from __future__ import annotations

import argparse

from skinr1.cli.common import add_config_arguments, load_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rl", help="hierarchical GRPO: vLLM rollout actors, reward actors, DeepSpeed learners")
    add_config_arguments(parser)
    parser.add_argument("--skip-sft", action="store_true", help="RL from the base model (no SFT warm start)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skinr1.pipeline import stages
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)
    config = load_config_from_args(args)
    base = stages.base_model_stage(config)
    data_dir = stages.data_stage(config)
    sft_policy = None
    if config.rl.init_from_sft and not args.skip_sft:
        sft_data = stages.trajectories_stage(config, data_dir)
        sft_policy = stages.sft_stage(config, base, sft_data)
    final = stages.rl_stage(config, base, sft_policy, data_dir, fresh=args.fresh)
    print(f"RL policy: {final}")
    return 0
