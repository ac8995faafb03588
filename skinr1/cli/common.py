"""Arguments shared by the commands that take a run config (`--config FILE key=value ...`)."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, help="run config YAML (e.g. skinr1/configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. sft.epochs=2")
    parser.add_argument("--fresh", action="store_true", help="recompute every stage, discarding finished results and unfinished checkpoints")


def load_config_from_args(args: argparse.Namespace):
    """Load the run config, save the resolved copy under the run directory, and start/join Ray."""
    from skinr1.cluster import init_ray
    from skinr1.config.loader import to_yaml
    from skinr1.config.schema import load_run_config
    from skinr1.data.records import write_text_atomic

    from skinr1.logs import route_driver_logs

    config = load_run_config(args.config, args.overrides)
    config.run_path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config.run_path / f"config.{args.command}.yaml", to_yaml(config))
    log_dir = config.run_path / "logs"
    route_driver_logs(log_dir)
    print(f"framework logs (Ray, vLLM, DeepSpeed): {log_dir}/")
    from skinr1.storage import is_uri

    init_ray(address=config.ray.address, num_cpus=config.ray.num_cpus, log_dir=log_dir,
             log_run=config.run_dir if is_uri(config.run_dir) else None)
    return config
