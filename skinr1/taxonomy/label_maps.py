"""Dataset label vocabularies -> taxonomy nodes, and the one `resolve` used everywhere.

`skinr1/taxonomy/data/label_maps.yaml` lists, per source dataset, each original label and the
deepest node that is true for it, plus labels that deliberately map to nothing ("UNK",
"miscellaneous") with the reason. Anything else is matched against the taxonomy's names and
synonyms; a string that matches nothing is an explicit unmapped result, never a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from skinr1.taxonomy.normalize import normalize_label
from skinr1.taxonomy.tree import Taxonomy, TaxonomyError

DEFAULT_LABEL_MAPS_PATH = Path(__file__).parent / "data" / "label_maps.yaml"

# Canonical source names, as the CLI and manifests spell them.
SOURCES = (
    "fitzpatrick17k", "ham10000", "isic2019", "bcn20000", "pad-ufes-20", "ddi", "derm7pt",
    "derm12345", "dermnet", "isic2018", "isic2020", "isbi2016", "msld", "omnimedvqa",
)
# Other names people use for a source (compared like source names: case, spaces, '-' and '_' ignored).
SOURCE_ALIASES = {"monkeypox": "msld", "monkeypoxskinlesiondataset": "msld", "mpox": "msld"}


@dataclass(frozen=True)
class Resolution:
    """Outcome of resolving one label. `node_id` is None exactly when the label is unmapped."""

    input: str
    source: str | None
    node_id: str | None
    reason: str | None = None
    matched_by: str | None = None  # "source_map", "id", "name" or None

    @property
    def mapped(self) -> bool:
        return self.node_id is not None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SourceVocabulary:
    """One dataset's label vocabulary."""

    name: str
    description: str
    labels: dict[str, str]  # normalised original label -> node id
    unmapped: dict[str, str]  # normalised original label -> reason
    aliases: tuple[str, ...] = ()


def canonical_source(source: str) -> str:
    """Accept 'PAD-UFES-20', 'pad_ufes_20', 'ISIC2019'... and return the canonical name."""
    key = normalize_label(source).replace(" ", "")
    for name in SOURCES:
        if key == name.replace("-", ""):
            return name
    if key in SOURCE_ALIASES:
        return SOURCE_ALIASES[key]
    raise ValueError(f"unknown source dataset {source!r}; expected one of {', '.join(SOURCES)}")


class LabelResolver:
    """Resolves dataset labels and free-text names onto a taxonomy."""

    def __init__(self, taxonomy: Taxonomy, vocabularies: dict[str, SourceVocabulary]):
        self.taxonomy = taxonomy
        self.vocabularies = vocabularies
        for vocab in vocabularies.values():
            for label, node_id in vocab.labels.items():
                if node_id not in taxonomy:
                    raise TaxonomyError(f"{vocab.name}: label {label!r} maps to unknown node {node_id!r}")

    @classmethod
    def from_yaml(cls, taxonomy: Taxonomy, path: str | Path) -> "LabelResolver":
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle) or {}
        vocabularies: dict[str, SourceVocabulary] = {}
        for name, spec in (document.get("sources") or {}).items():
            if name not in SOURCES:
                raise TaxonomyError(f"{path}: unknown source {name!r}; expected one of {SOURCES}")
            labels: dict[str, str] = {}
            for label, node_id in (spec.get("labels") or {}).items():
                key = normalize_label(str(label))
                if key in labels and labels[key] != node_id:
                    raise TaxonomyError(f"{name}: label {label!r} is mapped twice")
                labels[key] = str(node_id)
            unmapped = {normalize_label(str(k)): str(v) for k, v in (spec.get("unmapped") or {}).items()}
            overlap = set(labels) & set(unmapped)
            if overlap:
                raise TaxonomyError(f"{name}: labels both mapped and unmapped: {sorted(overlap)}")
            vocabularies[name] = SourceVocabulary(
                name=name, description=str(spec.get("description", "")), labels=labels, unmapped=unmapped
            )
        return cls(taxonomy, vocabularies)

    def resolve(self, label: str, source: str | None = None) -> Resolution:
        """Map `label` (from dataset `source`, or free text when None) to a node or an unmapped result."""
        canonical = canonical_source(source) if source else None
        text = label if isinstance(label, str) else ("" if label is None else str(label))
        key = normalize_label(text)
        if not key:
            return Resolution(text, canonical, None, reason="empty label")
        if canonical is not None and canonical in self.vocabularies:
            vocab = self.vocabularies[canonical]
            if key in vocab.unmapped:
                return Resolution(text, canonical, None, reason=vocab.unmapped[key])
            if key in vocab.labels:
                mapped = vocab.labels[key]
                # An exact node id names that node even where the dataset spells a disease the same
                # way ('malignant_melanoma' re-read from a manifest vs Fitzpatrick's "malignant melanoma").
                if text in self.taxonomy.nodes and text != mapped:
                    return Resolution(text, canonical, text, matched_by="id")
                return Resolution(text, canonical, mapped, matched_by="source_map")
        node_id = self.taxonomy.find(text)
        if node_id is not None:
            return Resolution(text, canonical, node_id, matched_by="name")
        where = f"the {canonical} vocabulary or " if canonical else ""
        return Resolution(text, canonical, None, reason=f"not in {where}any taxonomy name or synonym")

    def source_labels(self, source: str) -> dict[str, str]:
        """The explicit label map of one source (normalised label -> node id)."""
        vocab = self.vocabularies.get(canonical_source(source))
        return dict(vocab.labels) if vocab else {}
