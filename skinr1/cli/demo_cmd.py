"""`skinr1 demo`: the embedded demo on a laptop (local Ray, tiny model, bundled synthetic data)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded demo (tiny model, synthetic data)")
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic dataset size multiplier")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from skinr1.cluster import init_ray
    from skinr1.data.synthetic import synthesize
    from skinr1.models.tiny import build_tiny_model
    from skinr1.pipeline.harmonization import format_overview, harmonization_overview
    from skinr1.versions import check_versions

    check_versions(need_vllm=True)
    out = Path(args.out).resolve()
    started = time.perf_counter()
    init_ray()
    model_dir = out / "base_model"
    if not (model_dir / "config.json").is_file():
        build_tiny_model(model_dir)
    print(f"[1/3] tiny Qwen2.5-VL: {model_dir}")
    data_dir = out / "data"
    if not (data_dir / "summary.json").is_file():
        synthesize(data_dir, seed=0, scale=args.scale)
    summary = json.loads((data_dir / "summary.json").read_text())
    print(f"[2/3] synthetic dataset: {data_dir} ({', '.join(f'{k} {v}' for k, v in summary['splits'].items())})")
    rows = harmonization_overview(out / "harmonization")
    print("[3/3] label harmonization onto the SkinR1 taxonomy:")
    print(format_overview(rows))
    print(f"\nreports under {out / 'harmonization'}; done in {time.perf_counter() - started:.0f} s")
    return 0
