"""`skinr1 data prepare|build|synth|formats`: SkinR1 manifests from real datasets, split files, a synthetic set."""

from __future__ import annotations

import argparse
import sys

# Kept literal so `skinr1 --help` does not import the readers (and through them the taxonomy).
SOURCE_CHOICES = (
    "fitzpatrick17k", "ham10000", "isic2019", "bcn20000", "pad-ufes-20", "ddi", "derm7pt",
    "derm12345", "dermnet", "isic2018", "isic2020", "isbi2016", "msld", "omnimedvqa", "generic",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="prepare dataset manifests, generate the synthetic set")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="map a dataset's manifest onto the taxonomy and check its images",
        description="Writes OUT/manifest.jsonl (usable records), OUT/rejected.jsonl, OUT/bad_rows.jsonl, "
        "OUT/report.json and OUT/report.txt. Exits 0 whenever the run completes.",
    )
    prepare.add_argument("--source", required=True, type=_source, help=f"dataset format: {', '.join(SOURCE_CHOICES)}")
    prepare.add_argument(
        "--manifest",
        required=True,
        help="the dataset's metadata/ground-truth file (CSV, JSONL; OmniMedVQA: QA JSON) or, for "
        "folder-per-class datasets (dermnet, msld), the dataset folder",
    )
    prepare.add_argument("--images", required=True, help="folder holding the images (sub-folders are searched)")
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument(
        "--check-images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fully decode every image to catch corrupt/truncated files (default: on; off = existence only)",
    )
    prepare.add_argument(
        "--image-column", choices=("derm", "clinic"), help="derm7pt: which image of each case (default derm)"
    )
    prepare.add_argument("--split", help="split name for rows whose source gives none (default 'all')")
    prepare.add_argument("--workers", type=int, help="processes for image checks (default: min(8, CPUs))")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")
    prepare.set_defaults(func=run_prepare)

    build = commands.add_parser(
        "build",
        help="pool prepared manifests into the pipeline's split files, by a recipe",
        description="Writes OUT/dense.jsonl, sparse.jsonl, valid.jsonl, test.jsonl, test_sparse.jsonl, "
        "test_ood_<name>.jsonl per out-of-domain dataset, removed.jsonl, report.json and report.txt. "
        "Refuses (exit 2, nothing written) when the recipe would leak. Recipe format: docs/datasets.md; "
        "example: skinr1/configs/recipes/paper_example.yaml.",
    )
    build.add_argument("--recipe", required=True, help="recipe YAML")
    build.add_argument("--out", required=True, help="output folder (becomes data.dir)")
    build.add_argument("--prepared", help="folder of prepared datasets <name>/manifest.jsonl (overrides prepared_dir)")
    build.set_defaults(func=run_build)

    synth = commands.add_parser("synth", help="generate the synthetic 8-class demo dataset")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    synth.add_argument("--scale", type=float, default=1.0, help="size multiplier (0.1 for a tiny test set)")
    synth.set_defaults(func=run_synth)

    formats = commands.add_parser("formats", help="list the manifest formats prepare understands")
    formats.set_defaults(func=run_formats)


def _source(value: str) -> str:
    """Accept any spelling the taxonomy accepts ('PAD-UFES-20', 'isic_2019')."""
    from skinr1.data.readers import format_for

    try:
        return format_for(value).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_prepare(args: argparse.Namespace) -> int:
    from skinr1.data.prepare import prepare

    options = {}
    if args.image_column:
        options["image_column"] = args.image_column
    if args.split:
        options["split"] = args.split
    report = prepare(
        args.source,
        args.manifest,
        args.images,
        args.out,
        check_images=args.check_images,
        options=options,
        workers=args.workers,
        progress=False if args.quiet else None,
    )
    images = report["images"]
    print(
        f"{report['source']}: {report['total_rows']} rows, {report['mapped']} mapped, {report['unmapped']} unmapped, "
        f"{report['bad_rows']['count']} bad rows; images: {images['usable']} usable, {images['missing']} missing, "
        f"{images['outside_images']} outside --images, {images['unreadable']} unreadable ({report['elapsed_s']:.1f} s)"
    )
    print(f"wrote {args.out}/manifest.jsonl ({report['usable']} records); report: {args.out}/report.txt")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from skinr1.data.build import Recipe, build

    # A BuildError (a ValueError) becomes a one-line message and exit status 2 in skinr1.cli.main.
    report = build(Recipe.from_yaml(args.recipe, prepared_dir=args.prepared), args.out)
    counts = ", ".join(f"{name}: {info['records']}" for name, info in report["files"].items())
    print(f"{report['rows']} rows -> {counts}; removed {sum(report['removed'].values())} "
          f"({report['elapsed_s']:.1f} s); report: {args.out}/report.txt")
    if report["hint"]:
        print(report["hint"])
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from skinr1.data.synthetic import synthesize

    if args.scale <= 0:
        raise ValueError(f"--scale must be positive, got {args.scale}")
    summary = synthesize(args.out, seed=args.seed, scale=args.scale)
    counts = ", ".join(f"{split}: {n}" for split, n in summary["splits"].items())
    print(f"wrote {summary['images']} images to {args.out} ({counts}) in {summary['elapsed_s']:.1f} s", file=sys.stdout)
    return 0


def run_formats(args: argparse.Namespace) -> int:
    from skinr1.data.readers import FORMATS

    for name, fmt in FORMATS.items():
        print(f"{name:<15} {fmt.description}")
        for option, text in fmt.options.items():
            print(f"{'':<15}   option {option}: {text}")
    return 0
