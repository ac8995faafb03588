"""`skinr1 trajectories --config PATH [key=value ...]`: build the verified SFT set of reasoning trajectories.

Prints the text report; exit code 0 when at least one trajectory was accepted (or the input was
empty), 3 when every record was rejected (see rejects.jsonl), 2 for bad configs or inputs.
"""

from __future__ import annotations

import argparse

EXIT_NOTHING_ACCEPTED = 3


def _field_help() -> str:
    from skinr1.config.loader import field_docs
    from skinr1.trajectories.config import TeacherConfig, TrajectoriesConfig, TypeMix, VerifyConfig

    lines = ["config fields (set in the YAML file or as key=value):"]
    for prefix, schema in (("", TrajectoriesConfig), ("types.", TypeMix), ("teacher.", TeacherConfig), ("verify.", VerifyConfig)):
        for name, doc in field_docs(schema).items():
            lines.append(f"  {prefix}{name}: {doc.splitlines()[0]}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trajectories",
        help="write and verify textbook-guided reasoning trajectories (SFT set)",
        epilog=_field_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="a run config (e.g. skinr1/configs/demo.yaml: its `trajectories` section, applied to the run's "
        "dense split) or a YAML file of TrajectoriesConfig fields (e.g. skinr1/configs/trajectories_demo.yaml)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="field overrides, e.g. writer=teacher teacher.concurrency=8")
    parser.set_defaults(func=run_trajectories)


def run_trajectories(args: argparse.Namespace) -> int:
    import logging

    from skinr1.config.loader import load_config
    from skinr1.trajectories import TrajectoriesConfig, run
    from skinr1.trajectories.report import format_report

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if _is_run_config(args.config):
        return _run_stage(args)
    config = load_config(TrajectoriesConfig, args.config, args.overrides)
    report = run(config)
    print(format_report(report), end="")
    totals = report["totals"]
    return EXIT_NOTHING_ACCEPTED if totals["records"] and not totals["accepted"] else 0


def _is_run_config(path: str | None) -> bool:
    """A run config has sections (run_dir, trajectories, sft...); a TrajectoriesConfig file has none."""
    if not path:
        return False
    import yaml

    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    return isinstance(document, dict) and bool({"run_dir", "trajectories", "sft", "model"} & set(document))


def _run_stage(args: argparse.Namespace) -> int:
    from skinr1.cli.common import load_config_from_args
    from skinr1.pipeline import stages

    args.fresh = True  # an explicit `skinr1 trajectories` call always rebuilds
    config = load_config_from_args(args)
    data_dir = stages.data_stage(config)
    sft_data = stages.trajectories_stage(config, data_dir, fresh=True)
    print((sft_data.parent / "report.txt").read_text(), end="")
    return 0
