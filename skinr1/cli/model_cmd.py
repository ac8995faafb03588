"""`skinr1 model tiny`: write the random-weight tiny Qwen2.5-VL used by the demo and the tests."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="build the tiny local model")
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    tiny = commands.add_parser("tiny", help="write a random-weight tiny Qwen2.5-VL in Hugging Face format")
    tiny.add_argument("--out", required=True, help="output directory")
    tiny.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    tiny.set_defaults(func=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    from skinr1.models.tiny import TinyModelSpec, build_tiny_model

    path = build_tiny_model(args.out, TinyModelSpec(seed=args.seed))
    print(f"tiny Qwen2.5-VL written to {path}")
    return 0
