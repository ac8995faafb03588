"""`skinr1 merge --checkpoint ADAPTER_DIR --out DIR`: fold a LoRA adapter into full weights."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="merge a LoRA adapter into its base model (Hugging Face format)")
    parser.add_argument("--checkpoint", required=True, help="adapter directory (e.g. runs/demo/sft/final)")
    parser.add_argument("--base", help="base model (default: the adapter's recorded base)")
    parser.add_argument("--out", required=True, help="output directory for the merged model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from learner.export import merge_adapter

    out = merge_adapter(args.checkpoint, args.out, base=args.base)
    print(f"merged model written to {out}")
    return 0
