"""Harmonization overview: how each supported dataset's labels land on the one taxonomy.

Runs `skinr1.data.prepare` on the small sample manifests shipped in `skinr1/data/samples` (one per
real dataset format, written for this project) and, when present, on the real Fitzpatrick17k CSV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE_MANIFESTS = {
    "fitzpatrick17k": "fitzpatrick17k.csv",
    "ham10000": "HAM10000_metadata.csv",
    "isic2019": "ISIC_2019_Training_GroundTruth.csv",
    "bcn20000": "bcn20000_challenge_metadata.csv",
    "pad-ufes-20": "pad_ufes_20_metadata.csv",
    "ddi": "ddi_metadata.csv",
    "derm7pt": "derm7pt/meta.csv",
}
# The real Fitzpatrick17k manifest, where a checkout keeps the shared data beside it.
FITZPATRICK_CSV_ENV = "SKINR1_FITZPATRICK17K_CSV"


def find_fitzpatrick_csv() -> Path | None:
    candidates = [os.environ.get(FITZPATRICK_CSV_ENV, "")]
    repo = Path(__file__).resolve().parents[2]
    candidates.append(str(repo.parent / "shared" / "data" / "fitzpatrick17k" / "fitzpatrick17k.csv"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def harmonization_overview(out_dir: str | Path) -> list[dict[str, Any]]:
    """One row per manifest: rows read, mapped, unmapped labels, depth histogram, report path."""
    from skinr1.data.prepare import prepare

    jobs = [(source, SAMPLES_DIR / name, f"{source} (sample)") for source, name in SAMPLE_MANIFESTS.items()]
    real = find_fitzpatrick_csv()
    if real is not None:
        jobs.append(("fitzpatrick17k", real, "fitzpatrick17k (full CSV)"))
    rows = []
    for source, manifest, title in jobs:
        target = Path(out_dir) / title.split(" ")[0] / ("full" if "full" in title else "sample")
        # No images ship with the samples: existence is checked and every image counts as missing.
        report = prepare(source, manifest, target / "images-not-shipped", target, check_images=False, progress=False)
        rows.append({"manifest": title, "report": str(target / "report.txt"), **_summary(report)})
    return rows


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows": report["total_rows"],
        "mapped": report["mapped"],
        "unmapped": report["unmapped"],
        "unmapped_labels": [f"{u['label']} ({u['count']})" for u in report["unmapped_labels"]],
        "per_level": report["per_level"],
    }


def format_overview(rows: list[dict[str, Any]]) -> str:
    header = f"{'manifest':<28} {'rows':>6} {'mapped':>7} {'unmapped':>9}  unmapped labels"
    lines = [header, "-" * len(header)]
    for row in rows:
        labels = ", ".join(row["unmapped_labels"]) or "-"
        lines.append(f"{row['manifest']:<28} {row['rows']:>6} {row['mapped']:>7} {row['unmapped']:>9}  {labels}")
    return "\n".join(lines)
