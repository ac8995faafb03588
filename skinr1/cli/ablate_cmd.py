"""`skinr1 ablate --config FILE --variants FILE [--only NAME,...] [key=value ...]`: GRPO variants
(reward terms, RL without SFT, ...) on the same data and warm start, compared in one report."""

from __future__ import annotations

import argparse

from skinr1.cli.common import add_config_arguments, load_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ablate", help="train GRPO variants on the same data and compare them in one report")
    add_config_arguments(parser, default=None)
    parser.add_argument("--variants", required=True, help="YAML file: variants: {name: [key=value, ...]}")
    # A comma-separated list: a space-separated one would swallow the key=value overrides after it.
    parser.add_argument("--only", type=lambda text: [n for n in text.split(",") if n], metavar="NAME[,NAME...]",
                        help="run only these variants (in the file's order)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skinr1.eval.report import format_comparisons
    from skinr1.pipeline.ablation import load_variants, run_ablation
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)
    variants = load_variants(args.variants)
    if args.only:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            raise SystemExit(f"--only names unknown variants {unknown}; {args.variants} has {sorted(variants)}")
        variants = {name: extra for name, extra in variants.items() if name in args.only}
    load_config_from_args(args)  # validates the run config, records it, starts or joins Ray
    report = run_ablation(args.config, list(args.overrides), variants, args.fresh)
    print("\n" + format_comparisons(report))
    return 0
