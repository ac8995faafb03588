"""`skinr1 reward`: score completions from a JSONL file with the hierarchical reward.

Input lines: ``{"completion": "...", "label": "...", "source": "ham10000", "options": [...]}``
(`source` optional; `options`, as texts, dataset labels or node names, required in choice mode).
Output: one line per input line, in order: ``{"reward", "components", "reasons", "predicted"}``, or
``{"reward": null, "error": "..."}`` for a line that cannot be scored. Blank lines are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reward", help="score completions (JSONL in, JSONL out)")
    parser.add_argument("--preset", choices=("open", "paper"), default="open", help="reward preset (default: open)")
    parser.add_argument("--input", required=True, help="JSONL file of completions and labels")
    parser.add_argument("--output", required=True, help="JSONL file to write, one line per input line")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="RewardConfig field override (repeatable)"
    )
    parser.set_defaults(func=run_reward)


def score_line(line: str, scorer: Any, resolver: Any) -> dict[str, Any]:
    """One output object for one input line; errors become ``{"reward": None, "error": ...}``."""
    from rewards.scoring import build_sample

    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("expected a JSON object")
        if "label" not in record:
            raise ValueError("missing 'label'")
        mode = scorer.config.mode
        options = record.get("options") if mode == "choice" else None  # open mode never reads them
        sample = build_sample(resolver, str(record["label"]), mode, options, record.get("source"))
    except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        return {"reward": None, "error": str(error)}
    completion = record.get("completion")
    return scorer.score(completion if isinstance(completion, str) else "", sample).to_dict()


def run_reward(args: argparse.Namespace) -> int:
    from rewards.config import RewardConfig
    from rewards.scoring import RewardScorer
    from skinr1.taxonomy import default_resolver

    config = RewardConfig.from_overrides(args.preset, args.override)
    resolver = default_resolver()
    scorer = RewardScorer(config, resolver)
    scored, errors, total = 0, 0, 0.0
    with open(args.input, encoding="utf-8", errors="replace") as source, open(args.output, "w", encoding="utf-8") as sink:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            result = score_line(line, scorer, resolver)
            if result["reward"] is None:
                errors += 1
                result["error"] = f"line {number}: {result['error']}"
            else:
                scored += 1
                total += result["reward"]
            sink.write(json.dumps(result) + "\n")
    mean = total / scored if scored else float("nan")
    print(
        f"skinr1 reward: {scored + errors} lines, {scored} scored, {errors} errors, "
        f"mean reward {mean:.4f} (max {config.max_reward:g}, preset {args.preset})",
        file=sys.stderr,
    )
    return 0
