"""`skinr1 data synth`: a synthetic 8-class skin-lesion dataset for demos, tests and smoke training.

Eight demo diseases spanning the three top-level categories, drawn as 64x64 PNGs whose pixels
encode the class (see `synthetic_render.py` and the generated README.txt) so that a tiny vision
model can learn them in minutes on a CPU. Every image gets a Fitzpatrick type 1-6.

Splits (counts per disease at scale 1):

* dense        50  every record labelled with its disease;
* sparse      200  ~40% of records carry only a coarse label (the depth-2 group or the top-level
                   category), as pooled real datasets do; `extra.leaf_node_id` keeps the truth;
* test         50  held out, disease labels;
* test_sparse  50  held out, mixed granularity like `sparse`;
* valid        10  held out for validation during RL, disease labels.

Records use source "synthetic" (not a taxonomy dataset source): node ids are set directly, never
resolved. Output is a pure function of (seed, scale): same inputs, byte-identical images and
manifests (paths aside, which are absolute).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from skinr1.data.records import Record, write_jsonl, write_text_atomic
from skinr1.data.synthetic_render import SIZE, SKIN_TONES, STYLES, render
from skinr1.taxonomy import DEFAULT_TAXONOMY_PATH, Taxonomy

SYNTHETIC_SOURCE = "synthetic"
DEMO_LEAVES = (
    "melanoma",
    "basal_cell_carcinoma",
    "squamous_cell_carcinoma",
    "melanocytic_nevus",
    "seborrheic_keratosis",
    "dermatofibroma",
    "psoriasis",
    "vitiligo",
)
# split -> (records per disease at scale 1, share of records with a coarse label)
SPLITS: dict[str, tuple[int, float]] = {
    "dense": (50, 0.0),
    "sparse": (200, 0.4),
    "test": (50, 0.0),
    "test_sparse": (50, 0.4),
    "valid": (10, 0.0),
}
COARSE_SHARE_NOTE = "coarse records are split evenly between the group (depth 2) and the category (depth 1)"


def _count(base: int, scale: float) -> int:
    # Round half up (Python's round() is banker's: 2.5 -> 2) and keep at least one per class.
    return max(1, int(math.floor(base * scale + 0.5)))


def _granularities(rng: np.random.Generator, n: int, coarse_share: float, offset: int) -> list[str]:
    """Exactly round(n * share) coarse labels, alternating group/category, at random positions."""
    n_coarse = int(math.floor(n * coarse_share + 0.5)) if coarse_share else 0
    # `offset` alternates which coarse level comes first per disease, so that even a split with
    # one coarse record per disease has both levels.
    coarse = ["group" if (k + offset) % 2 == 0 else "category" for k in range(n_coarse)]
    labels = coarse + ["leaf"] * (n - n_coarse)
    return [labels[i] for i in rng.permutation(n)]


def load_taxonomy() -> Taxonomy:
    """The shipped tree only: synthetic data needs node paths, not the dataset label maps."""
    return Taxonomy.from_yaml(DEFAULT_TAXONOMY_PATH)


ALL_SKIN_TYPES = (1, 2, 3, 4, 5, 6)


def synthesize(out_dir: str | Path, seed: int = 0, scale: float = 1.0, taxonomy: Taxonomy | None = None,
               dense_skin_types: Sequence[int] = ALL_SKIN_TYPES) -> dict[str, Any]:
    """Generate the dataset under `out_dir`; return the summary (as in summary.json, plus elapsed_s).

    `dense_skin_types` are the Fitzpatrick types of the dense (SFT) split, cycled per disease (a
    type listed twice is drawn twice as often), as textbook images mostly show lighter skin; every
    other split covers all six evenly.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    started = time.perf_counter()
    taxonomy = taxonomy or load_taxonomy()
    missing = [leaf for leaf in DEMO_LEAVES if leaf not in taxonomy]
    if missing:
        raise ValueError(f"taxonomy lacks the demo diseases {missing}")
    out = Path(out_dir).absolute()
    paths = {leaf: taxonomy.path(leaf) for leaf in DEMO_LEAVES}

    manifests: dict[str, list[Record]] = {}
    for split_index, (split, (base, coarse_share)) in enumerate(SPLITS.items()):
        skin_types = tuple(dense_skin_types) if split == "dense" else ALL_SKIN_TYPES
        records = _make_split(out, split, split_index, _count(base, scale), coarse_share, seed, paths, taxonomy, skin_types)
        manifests[split] = records
        write_jsonl(out / f"{split}.jsonl", records)

    summary = _summary(manifests, paths, seed, scale)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "README.txt", _readme(summary, taxonomy))
    return {**summary, "elapsed_s": round(time.perf_counter() - started, 3)}


def _make_split(
    out: Path,
    split: str,
    split_index: int,
    per_leaf: int,
    coarse_share: float,
    seed: int,
    paths: dict[str, list[str]],
    taxonomy: Taxonomy,
    skin_types: Sequence[int] = ALL_SKIN_TYPES,
) -> list[Record]:
    """Render and save one split's images; return its records in file order."""
    specs: list[tuple[str, int, int, str]] = []  # (leaf, index within leaf, skin type, granularity)
    for leaf_index, leaf in enumerate(DEMO_LEAVES):
        level_rng = np.random.default_rng([seed, split_index, leaf_index, 1])
        levels = _granularities(level_rng, per_leaf, coarse_share, leaf_index)
        for i in range(per_leaf):
            # Skin types cycle per disease (shifted per disease and split): balanced coverage.
            fitzpatrick = skin_types[(i + leaf_index + split_index) % len(skin_types)]
            specs.append((leaf, i, fitzpatrick, levels[i]))
    order = np.random.default_rng([seed, split_index, 2]).permutation(len(specs))

    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    records: list[Record] = []
    for number, spec_index in enumerate(order):
        leaf, i, fitzpatrick, granularity = specs[spec_index]
        rng = np.random.default_rng([seed, split_index, DEMO_LEAVES.index(leaf), i, 0])
        pixels = render(leaf, fitzpatrick, rng)
        # Neutral file names: nothing in the path may give the class away.
        name = f"{split}_{number:05d}.png"
        Image.fromarray(pixels, mode="RGB").save(image_dir / name, format="PNG")
        written.add(name)
        path = paths[leaf]
        node_id = {"leaf": leaf, "group": path[1], "category": path[0]}[granularity]
        records.append(
            Record(
                record_id=f"{SYNTHETIC_SOURCE}:{split}:{number:05d}",
                image=str(image_dir / name),
                node_id=node_id,
                label_depth=taxonomy.depth(node_id),
                source=SYNTHETIC_SOURCE,
                original_label=node_id,
                fitzpatrick_type=fitzpatrick,
                split=split,
                extra={"leaf_node_id": leaf, "granularity": granularity, "leaf_path": list(path)},
            )
        )
    _remove_stale(image_dir, split, written)
    return records


def _remove_stale(image_dir: Path, split: str, keep: set[str]) -> None:
    """Delete images of an earlier, larger run (only files following our own naming pattern)."""
    pattern = re.compile(rf"{re.escape(split)}_\d{{5}}\.png")
    for entry in os.scandir(image_dir):
        if pattern.fullmatch(entry.name) and entry.name not in keep:
            os.unlink(entry.path)


def _summary(manifests: dict[str, list[Record]], paths: dict[str, list[str]], seed: int, scale: float) -> dict[str, Any]:
    per_split: dict[str, Any] = {}
    for split, records in manifests.items():
        per_split[split] = {
            "records": len(records),
            "per_leaf": dict(sorted(Counter(r.extra["leaf_node_id"] for r in records).items())),
            "per_node": dict(sorted(Counter(r.node_id for r in records).items())),
            "per_level": {str(k): v for k, v in sorted(Counter(r.label_depth for r in records).items())},
            "granularity": dict(sorted(Counter(r.extra["granularity"] for r in records).items())),
            "fitzpatrick_types": {str(k): v for k, v in sorted(Counter(r.fitzpatrick_type for r in records).items())},
        }
    return {
        "source": SYNTHETIC_SOURCE,
        "seed": seed,
        "scale": scale,
        "image_size": [SIZE, SIZE],
        "images": sum(len(r) for r in manifests.values()),
        "splits": {split: len(records) for split, records in manifests.items()},
        "leaves": {
            leaf: {"path": path, "category": path[0], "group": path[1], "colour": STYLES[leaf].colour_name}
            for leaf, path in paths.items()
        },
        "categories": sorted({path[0] for path in paths.values()}),
        "per_split": per_split,
        "coarse_labels": COARSE_SHARE_NOTE,
    }


def _readme(summary: dict[str, Any], taxonomy: Taxonomy) -> str:
    lines = [
        "SkinR1 synthetic skin-lesion dataset",
        "====================================",
        "",
        f"Generated by `skinr1 data synth --seed {summary['seed']} --scale {summary['scale']}`.",
        f"{summary['images']} RGB PNG images of {SIZE}x{SIZE} pixels under images/<split>/, one Record per",
        "line in <split>.jsonl (source 'synthetic'; node_id is the label the record carries,",
        "extra.leaf_node_id the disease actually drawn, extra.granularity leaf/group/category).",
        "",
        "Splits: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()),
        f"sparse and test_sparse: ~40% coarse labels; {COARSE_SHARE_NOTE}.",
        "",
        "Visual code",
        "-----------",
        "Category (border and layout):",
        "  malignant       one large lesion, irregular notched asymmetric border",
        "  benign          one small/medium lesion, smooth round/oval border",
        "  non-neoplastic  several diffuse patches spread over the skin, soft organic borders",
        "Group (surface):",
        "  melanocytic lesions (melanoma, nevus)      pigment network (reticular mesh)",
        "  epidermal lesions (BCC, SCC, SK)           fine pale keratin speckle",
        "  dermal lesion (dermatofibroma)             central white scar-like patch",
        "  inflammatory (psoriasis, vitiligo)         multiple patches",
        "Disease (dominant colour = strongest cue, plus marks):",
    ]
    for leaf, style in STYLES.items():
        path = " > ".join(taxonomy.path_names(leaf))
        lines.append(f"  {leaf:<24} {style.colour_name} {style.colour}; {style.extras}")
        lines.append(f"  {'':<24} taxonomy: {path}")
    lines += [
        "",
        "Skin: Fitzpatrick type 1-6 per image (cycled so every class covers every type), background",
        "tones " + ", ".join(f"{k}: {v}" for k, v in SKIN_TONES.items()) + ",",
        "with lighting gradients, mottling, grain and occasional hairs as nuisances. Lesion colours",
        "were chosen far (RGB distance > 50) from every skin tone, so classes stay separable on all.",
    ]
    return "\n".join(lines) + "\n"
