"""`skinr1 taxonomy resolve|show`: inspect the unified taxonomy and how dataset labels map onto it."""

from __future__ import annotations

import argparse
import json

from skinr1.taxonomy import SOURCES, default_resolver

EXIT_UNMAPPED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("taxonomy", help="resolve dataset labels, show the disease tree")
    commands = parser.add_subparsers(dest="taxonomy_command", metavar="ACTION", required=True)

    resolve = commands.add_parser("resolve", help="map a label onto the taxonomy (prints JSON)")
    resolve.add_argument("label", nargs="+", help="the label (several words are joined with spaces)")
    resolve.add_argument("--source", choices=SOURCES, help="dataset vocabulary the label comes from")
    resolve.set_defaults(func=run_resolve)

    show = commands.add_parser("show", help="print the disease tree")
    show.set_defaults(func=run_show)


def resolution_json(label: str, source: str | None) -> tuple[dict, bool]:
    """The JSON object `skinr1 taxonomy resolve` prints, and whether the label mapped."""
    resolver = default_resolver()
    hit = resolver.resolve(label, source=source)
    if not hit.mapped:
        return {"input": label, "source": source, "node_id": None, "reason": hit.reason}, False
    taxonomy = resolver.taxonomy
    return {
        "input": label,
        "source": source,
        "node_id": hit.node_id,
        "path": taxonomy.path_names(hit.node_id),
        "depth": taxonomy.depth(hit.node_id),
        "malignancy": taxonomy.malignancy(hit.node_id),
    }, True


def run_resolve(args: argparse.Namespace) -> int:
    payload, mapped = resolution_json(" ".join(args.label), args.source)
    print(json.dumps(payload))
    return 0 if mapped else EXIT_UNMAPPED


def run_show(args: argparse.Namespace) -> int:
    taxonomy = default_resolver().taxonomy
    print(taxonomy.format_tree())
    print(f"\n{len(taxonomy)} nodes, {len(taxonomy.leaves())} leaves")
    return 0
