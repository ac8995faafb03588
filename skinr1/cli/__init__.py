"""The `skinr1` command line. Each sub-command lives in its own module under `skinr1/cli/`.

A command module exposes `register(subparsers)`, which adds its parser and sets `func` to a handler
that returns the process exit code. Handlers import heavy libraries (torch, ray, vllm) lazily so
that `skinr1 --help` and the taxonomy commands stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from skinr1.pipeline.scaling import StopRequested

# Order = order in `skinr1 --help`.
COMMAND_MODULES = (
    "skinr1.cli.demo_cmd",
    "skinr1.cli.taxonomy_cmd",
    "skinr1.cli.data_cmd",
    "skinr1.cli.model_cmd",
    "skinr1.cli.reward_cmd",
    "skinr1.cli.trajectories_cmd",
    "skinr1.cli.sft_cmd",
    "skinr1.cli.pipeline_cmd",
    "skinr1.cli.ablate_cmd",
    "skinr1.cli.rl_cmd",
    "skinr1.cli.scale_cmd",
    "skinr1.cli.stop_cmd",
    "skinr1.cli.merge_cmd",
    "skinr1.cli.eval_cmd",
    "skinr1.cli.serve_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skinr1",
        description="SkinR1: hierarchical, textbook-guided RL for skin-disease diagnosis on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a command that is not part of this build yet
        module.register(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting key=value overrides stand before or after flags (`rl --fresh a=1 b=2`),
    which argparse's single positional list does not allow on its own."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in unknown):
            args.overrides = list(args.overrides or []) + unknown
        else:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StopRequested as stopped:  # `skinr1 stop`: the run ended as asked, nothing lost
        print(f"skinr1 {args.command}: {stopped}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        # Bad input (config values, paths, labels): a clear one-line message, not a traceback.
        print(f"skinr1 {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
