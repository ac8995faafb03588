"""`skinr1 reward`: score completions from a JSONL file with the hierarchical reward.

Input lines: ``{"completion": "...", "label": "...", "source": "ham10000", "options": [...]}``
(`source` optional; `options`, as texts, dataset labels or node names, required in choice mode).
Output: exactly one line per input line, in order, each with its input ``"line"`` number:
``{"line", "reward", "components", "reasons", "predicted"}``, or ``{"line", "reward": null,
"error": "..."}`` for a line that cannot be scored (blank, invalid or too deeply nested JSON, no
label, a missing or non-string completion). The output is written atomically: a failed run leaves
any previous output untouched, and the output may not be the input file itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterator


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
    """One output object for one input line; errors become ``{"reward": None, "error": ...}``. Never raises."""
    from rewards.scoring import build_sample
    from skinr1.data.records import parse_json_line

    if not line.strip():
        return {"reward": None, "error": "blank line"}
    try:
        record = parse_json_line(line)
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        if "label" not in record:
            raise ValueError("missing 'label'")
        completion = record.get("completion")
        if completion is None:
            raise ValueError("missing 'completion'")
        if not isinstance(completion, str):
            raise ValueError(f"'completion' must be a string, got {type(completion).__name__}")
        mode = scorer.config.mode
        options = record.get("options") if mode == "choice" else None  # open mode never reads them
        if options is not None and not isinstance(options, list):
            raise ValueError(f"'options' must be a list, got {type(options).__name__}")
        source = record.get("source")
        if source is not None and not isinstance(source, str):
            raise ValueError(f"'source' must be a string, got {type(source).__name__}")
        sample = build_sample(resolver, str(record["label"]), mode, options, source)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as error:
        return {"reward": None, "error": str(error) or type(error).__name__}
    return scorer.score(completion, sample).to_dict()


def same_file(first: str, second: str) -> bool:
    """True when both paths name one file: equal after resolving symlinks, or the same inode."""
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # the output does not exist yet
        return False


def scored_lines(source: Any, scorer: Any, resolver: Any, totals: dict[str, float]) -> Iterator[str]:
    """One JSON line per input line, numbered; `totals` collects counts for the summary."""
    for number, line in enumerate(source, start=1):
        result = score_line(line, scorer, resolver)
        if result["reward"] is None:
            totals["errors"] += 1
            result["error"] = f"line {number}: {result['error']}"
        elif result.get("error"):  # scored 0 because the sample was invalid: still an error
            totals["errors"] += 1
        else:
            totals["scored"] += 1
            totals["reward"] += result["reward"]
        yield json.dumps({"line": number, **result})


def run_reward(args: argparse.Namespace) -> int:
    from rewards.config import RewardConfig
    from rewards.scoring import RewardScorer
    from skinr1.data.records import write_lines_atomic
    from skinr1.taxonomy import default_resolver

    if same_file(args.input, args.output):
        # Opening the output for writing would empty the input before it is read.
        raise ValueError(f"--output {args.output} is the input file; write the scores elsewhere")
    config = RewardConfig.from_overrides(args.preset, args.override)
    resolver = default_resolver()
    scorer = RewardScorer(config, resolver)
    totals = {"scored": 0, "errors": 0, "reward": 0.0}
    with open(args.input, encoding="utf-8", errors="replace") as source:
        lines = write_lines_atomic(args.output, scored_lines(source, scorer, resolver, totals))
    scored, errors = int(totals["scored"]), int(totals["errors"])
    mean = totals["reward"] / scored if scored else float("nan")
    print(
        f"skinr1 reward: {lines} lines, {scored} scored, {errors} errors, "
        f"mean reward {mean:.4f} (max {config.max_reward:g}, preset {args.preset})",
        file=sys.stderr,
    )
    return 0
