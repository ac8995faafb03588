"""Unified dermatology taxonomy: the disease tree, dataset label maps and label resolution.

Typical use::

    from skinr1.taxonomy import default_resolver
    resolver = default_resolver()
    hit = resolver.resolve("mel", source="ham10000")
    resolver.taxonomy.path_names(hit.node_id)   # ['malignant', 'malignant melanoma', 'melanoma']
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from skinr1.taxonomy.label_maps import (
    DEFAULT_LABEL_MAPS_PATH,
    SOURCES,
    LabelResolver,
    Resolution,
    canonical_source,
)
from skinr1.taxonomy.normalize import normalize_label
from skinr1.taxonomy.tree import (
    DEFAULT_TAXONOMY_PATH,
    MALIGNANCY_CLASSES,
    Node,
    Taxonomy,
    TaxonomyError,
)

__all__ = [
    "DEFAULT_LABEL_MAPS_PATH",
    "DEFAULT_TAXONOMY_PATH",
    "MALIGNANCY_CLASSES",
    "SOURCES",
    "LabelResolver",
    "Node",
    "Resolution",
    "Taxonomy",
    "TaxonomyError",
    "canonical_source",
    "default_resolver",
    "default_taxonomy",
    "load_resolver",
    "normalize_label",
]


def load_resolver(taxonomy_path: str | Path | None = None, label_maps_path: str | Path | None = None) -> LabelResolver:
    """Load a taxonomy and its label maps (the shipped ones by default)."""
    taxonomy = Taxonomy.from_yaml(taxonomy_path or DEFAULT_TAXONOMY_PATH)
    return LabelResolver.from_yaml(taxonomy, label_maps_path or DEFAULT_LABEL_MAPS_PATH)


@lru_cache(maxsize=1)
def default_resolver() -> LabelResolver:
    """The shipped taxonomy and label maps, loaded and validated once per process."""
    return load_resolver()


def default_taxonomy() -> Taxonomy:
    return default_resolver().taxonomy
