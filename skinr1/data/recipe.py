"""The `skinr1 data build` recipe: which prepared datasets to pool and how, loaded from YAML.

`Recipe` (with one `DatasetSpec` per dataset) is validated on construction, so an unusable recipe
fails with a `BuildError` before any input is read. The build itself lives in `skinr1.data.build`;
shipped recipes are in skinr1/configs/recipes/ and the format is described in docs/datasets.md.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from skinr1.data import splits as rules

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class BuildError(ValueError):
    """The recipe or an input is unusable, or the build would leak; nothing has been written."""


@dataclass
class DatasetSpec:
    """One prepared dataset in a recipe (a bare string in YAML means `{name: <string>}`)."""

    name: str
    """Short name: report key and, for an OOD set, the file test_ood_<name>.jsonl (letters, digits, . _ -)."""
    manifest: str | None = None
    """Prepared manifest; default <prepared_dir>/<name>/manifest.jsonl; relative paths are under prepared_dir."""
    train_set: str = "sparse"
    """In-domain only: 'dense' sends this dataset's fine-labelled train records to dense.jsonl (SFT and
    trajectories; its coarse ones still go to sparse.jsonl); 'sparse' sends all to sparse.jsonl (RL)."""
    official_split: bool = True
    """Keep the split the source ships (Record.split); false treats the dataset as unsplit (60/20/20)."""
    split_aliases: dict[str, str] = field(default_factory=dict)
    """Extra split spellings -> train / valid / test (built in: all, train(ing), val(idation), dev, test(ing))."""
    group_keys: list[str] | None = None
    """Record.extra fields naming a patient/lesion for this dataset; None = the recipe's group_keys."""
    group_namespace: str | None = None
    """Namespace of those ids: datasets sharing one link lesions across datasets. None = 'isic' for
    ISIC-archive sources (HAM10000, ISIC 2018-2020, BCN20000, ISBI 2016, Derm12345), else the source."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise BuildError(f"dataset name {self.name!r}: use letters, digits, '.', '_' or '-'")
        if self.train_set not in ("dense", "sparse"):
            raise BuildError(f"dataset {self.name!r}: train_set must be dense or sparse, got {self.train_set!r}")
        bad = {k: v for k, v in self.split_aliases.items() if v not in rules.SPLITS}
        if bad:
            raise BuildError(f"dataset {self.name!r}: split_aliases must map to {rules.SPLITS}, got {bad}")


@dataclass
class Recipe:
    """How `skinr1 data build` pools prepared datasets (YAML; see skinr1/configs/recipes/)."""

    in_domain: list[DatasetSpec]
    """Datasets pooled into dense/sparse/valid/test/test_sparse, in priority order (duplicate ties keep the earlier)."""
    out_of_domain: list[DatasetSpec] = field(default_factory=list)
    """Datasets held out whole, each written as test_ood_<name>.jsonl (add them to data.test)."""
    prepared_dir: str = "prepared"
    """Folder holding <name>/manifest.jsonl from `skinr1 data prepare` (relative: to the working directory)."""
    seed: int = 0
    """Seed of the group-level stratified splits (same recipe, same inputs, same files)."""
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "valid": 0.2, "test": 0.2})
    """Train/valid/test shares for datasets without an official split (the paper's 60/20/20)."""
    valid_from_train: float = 0.25
    """Share of an official train split moved to valid when the source has no valid split (paper: 75/25)."""
    fine_min_depth: int = 3
    """Labels at least this deep are 'fine' (diseases); depths 1-2 are the Fitzpatrick17k categories and groups."""
    fine_leaf_only: bool = False
    """Also require a taxonomy leaf for 'fine' (melanoma, which has subtypes, then counts as coarse)."""
    group_keys: list[str] = field(default_factory=lambda: ["lesion_id", "patient_id", "case_num"])
    """Record.extra fields that identify one patient or lesion; records sharing a value share a split."""
    hash_images: bool = True
    """Hash image bytes to find copies stored under different names (reads every image once)."""
    ood_overlap: str = "refuse"
    """In-domain records sharing an image/ISIC id/patient/lesion with an OOD set: 'refuse' the build, or
    'drop_in_domain' (drop those in-domain records and count them)."""

    def __post_init__(self) -> None:
        self.in_domain = [_spec(d, "in_domain") for d in self.in_domain or []]
        self.out_of_domain = [_spec(d, "out_of_domain") for d in self.out_of_domain or []]
        if not self.in_domain:
            raise BuildError("recipe: in_domain lists no dataset")
        if set(self.fractions) != set(rules.SPLITS) or any(not 0 <= v <= 1 for v in self.fractions.values()) \
                or abs(sum(self.fractions.values()) - 1) > 1e-6 or self.fractions["train"] <= 0:
            raise BuildError(f"recipe: fractions must give train/valid/test shares summing to 1, got {self.fractions}")
        if not 0 <= self.valid_from_train < 1:
            raise BuildError(f"recipe: valid_from_train must be in [0, 1), got {self.valid_from_train}")
        if self.ood_overlap not in ("refuse", "drop_in_domain"):
            raise BuildError(f"recipe: ood_overlap must be refuse or drop_in_domain, got {self.ood_overlap!r}")
        seen: dict[str, str] = {}
        for spec, ood in self.all_datasets():
            where = "out_of_domain" if ood else "in_domain"
            for key in (spec.name, str(self.manifest_path(spec).resolve())):
                if key in seen:
                    raise BuildError(f"recipe would leak: {key!r} is listed in {seen[key]} and again in {where}")
                seen[key] = where

    @classmethod
    def from_yaml(cls, path: str | Path, prepared_dir: str | None = None) -> "Recipe":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise BuildError(f"recipe {path}: {error}") from None
        data = _known(cls, data, f"recipe {path}")
        if prepared_dir is not None:
            data["prepared_dir"] = prepared_dir
        return cls(**data)

    def all_datasets(self) -> list[tuple[DatasetSpec, bool]]:
        """(spec, is OOD) in priority order: in-domain first."""
        return [(s, False) for s in self.in_domain] + [(s, True) for s in self.out_of_domain]

    def manifest_path(self, spec: DatasetSpec) -> Path:
        return Path(self.prepared_dir) / (spec.manifest or f"{spec.name}/manifest.jsonl")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _known(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BuildError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise BuildError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    return dict(data)


def _spec(entry: Any, where: str) -> DatasetSpec:
    if isinstance(entry, DatasetSpec):
        return entry
    if isinstance(entry, str):
        return DatasetSpec(name=entry)
    return DatasetSpec(**_known(DatasetSpec, entry, f"recipe {where} entry {entry!r}"))
