"""The textbook knowledge base: per-disease passages, differentials and visible features.

Two interchangeable on-disk forms (documented in docs/knowledge_base.md):

* a directory of markdown files, one per taxonomy node: YAML front matter (``node_id``, ``name``,
  ``sources``, ``licence``, ``differentials``) then ``## Section`` headings;
* a JSON Lines file with one object per node and the same fields, sections under ``"sections"``.

Everything is validated on load against the taxonomy (node ids and differentials must exist) and
every problem names the file (and line) it comes from, because a user plugging in extracts from
their own textbook should see "melanom.md: unknown node_id 'melanom'", not a KeyError at build time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from skinr1.taxonomy import Taxonomy

DEFAULT_KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"

KNOWN_SECTIONS = (
    "Clinical features",
    "Distribution",
    "Dermoscopy",
    "Distinguishing features",
    "Differentials",
    "Visible features",
)
"""Sections the writers know by name; others are kept as retrievable passages too."""

VISIBLE_FEATURES = "Visible features"
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^##[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*[-*+][ \t]+(.*\S)[ \t]*$", re.MULTILINE)
_ALLOWED_KEYS = {"node_id", "name", "sources", "licence", "license", "differentials", "sections", "visible_features"}


class KnowledgeBaseError(ValueError):
    """A knowledge-base file is malformed or refers to nodes the taxonomy does not have."""


@dataclass(frozen=True)
class Passage:
    """One retrievable unit: a section of one entry."""

    node_id: str
    name: str
    """The entry's disease name (indexed with the text: sections rarely repeat their own title)."""
    section: str
    text: str
    source: str
    """Where it came from: ``<file>#<section>`` (file name relative to the knowledge base)."""


@dataclass(frozen=True)
class KnowledgeEntry:
    """Everything the knowledge base says about one taxonomy node."""

    node_id: str
    name: str
    sources: tuple[str, ...]
    licence: str
    differentials: tuple[str, ...]
    sections: dict[str, str]
    visible_features: tuple[str, ...]
    origin: str
    """File (and line, for JSONL) the entry was read from."""

    def passages(self) -> list[Passage]:
        name = self.origin.split(":")[0]
        return [Passage(self.node_id, self.name, s, t, f"{name}#{s}") for s, t in self.sections.items() if t.strip()]


@dataclass
class KnowledgeBase:
    """Validated entries by node id."""

    entries: dict[str, KnowledgeEntry] = field(default_factory=dict)
    root: str = ""
    """The directory or file it was loaded from (recorded in reports)."""

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, node_id: str) -> KnowledgeEntry | None:
        return self.entries.get(node_id)

    def passages(self) -> list[Passage]:
        """All passages in a stable order (node id, then section order in the file)."""
        return [p for node_id in sorted(self.entries) for p in self.entries[node_id].passages()]

    def differentials(self) -> dict[str, tuple[str, ...]]:
        return {n: e.differentials for n, e in self.entries.items() if e.differentials}

    def visible_features(self, node_id: str) -> tuple[str, ...]:
        entry = self.entries.get(node_id)
        return entry.visible_features if entry else ()


# --------------------------------------------------------------------------- parsing (pure)
def parse_markdown(text: str, origin: str) -> dict[str, Any]:
    """Front matter + ``## Section`` blocks of one markdown file, as a raw entry dict."""
    match = _FRONT_MATTER.match(text.lstrip("\ufeff"))
    if not match:
        raise KnowledgeBaseError(f"{origin}: no YAML front matter (the file must start with a '---' line)")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as error:
        raise KnowledgeBaseError(f"{origin}: front matter is not valid YAML: {error}") from None
    if not isinstance(meta, dict):
        raise KnowledgeBaseError(f"{origin}: front matter must be a mapping of keys to values")
    if "sections" in meta:
        raise KnowledgeBaseError(f"{origin}: write sections as '## Heading' blocks, not a 'sections' key")
    body = text[match.end():]
    headings = list(_HEADING.finditer(body))
    if body[: headings[0].start() if headings else len(body)].strip():
        raise KnowledgeBaseError(f"{origin}: text before the first '## Section' heading")
    sections: dict[str, str] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(body)
        title = heading.group(1).strip()
        if title in sections:
            raise KnowledgeBaseError(f"{origin}: section {title!r} appears twice")
        sections[title] = body[heading.end():end].strip()
    return {**meta, "sections": sections}


def parse_bullets(text: str) -> tuple[str, ...]:
    """Bullet items of a section, or its comma/semicolon-separated phrases when it has none."""
    items = _BULLET.findall(text)
    if not items:
        items = re.split(r"[;,\n]", text)
    return tuple(item.strip().rstrip(".") for item in items if item.strip())


def build_entry(raw: dict[str, Any], origin: str, taxonomy: Taxonomy) -> KnowledgeEntry:
    """Validate a raw entry (from markdown or JSONL) against the taxonomy."""
    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise KnowledgeBaseError(f"{origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    node_id = raw.get("node_id")
    if not isinstance(node_id, str) or not node_id:
        raise KnowledgeBaseError(f"{origin}: 'node_id' is required (a taxonomy node id such as 'melanoma')")
    if node_id not in taxonomy:
        hint = taxonomy.find(node_id)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise KnowledgeBaseError(f"{origin}: unknown node_id {node_id!r}{extra}")
    sources = _string_list(raw.get("sources"), "sources", origin)
    if not sources:
        raise KnowledgeBaseError(f"{origin}: 'sources' must list where the text comes from (and its licence)")
    differentials = _string_list(raw.get("differentials"), "differentials", origin)
    for other in differentials:
        if other not in taxonomy:
            raise KnowledgeBaseError(f"{origin}: differential {other!r} is not a taxonomy node id")
        if other == node_id:
            raise KnowledgeBaseError(f"{origin}: {node_id!r} lists itself as a differential")
    sections = raw.get("sections") or {}
    if not isinstance(sections, dict) or not all(isinstance(v, str) for v in sections.values()):
        raise KnowledgeBaseError(f"{origin}: 'sections' must map section titles to text")
    sections = {str(k).strip(): v.strip() for k, v in sections.items()}
    features = raw.get("visible_features")
    if features is not None:
        features = _string_list(features, "visible_features", origin)
        sections.setdefault(VISIBLE_FEATURES, "\n".join(f"- {f}" for f in features))
    else:
        features = parse_bullets(sections.get(VISIBLE_FEATURES, ""))
    if not any(v for v in sections.values()):
        raise KnowledgeBaseError(f"{origin}: entry {node_id!r} has no section text")
    return KnowledgeEntry(
        node_id=node_id,
        name=str(raw.get("name") or taxonomy.node(node_id).name),
        sources=sources,
        licence=str(raw.get("licence") or raw.get("license") or ""),
        differentials=differentials,
        sections=sections,
        visible_features=tuple(features),
        origin=origin,
    )


def _string_list(value: Any, key: str, origin: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise KnowledgeBaseError(f"{origin}: {key!r} must be a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip())


# --------------------------------------------------------------------------- loading
def load_knowledge_base(path: str | Path | None, taxonomy: Taxonomy) -> KnowledgeBase:
    """Load a directory of ``*.md`` files or a ``.jsonl`` file (the shipped base when `path` is empty)."""
    root = Path(path) if path else DEFAULT_KNOWLEDGE_DIR
    if not root.exists():
        raise KnowledgeBaseError(f"knowledge base {root} does not exist")
    if root.is_dir():
        files = sorted(root.glob("*.md"))
        if not files:
            raise KnowledgeBaseError(f"knowledge base directory {root} has no *.md files")
        raws = ((parse_markdown(f.read_text(encoding="utf-8"), f.name), f.name) for f in files)
    elif root.suffix == ".jsonl":
        raws = _jsonl_entries(root)
    else:
        raise KnowledgeBaseError(f"knowledge base {root} must be a directory of .md files or a .jsonl file")
    return from_raw_entries(raws, taxonomy, root=str(root))


def from_raw_entries(raws: Iterable[tuple[dict[str, Any], str]], taxonomy: Taxonomy, root: str = "") -> KnowledgeBase:
    entries: dict[str, KnowledgeEntry] = {}
    for raw, origin in raws:
        entry = build_entry(raw, origin, taxonomy)
        if entry.node_id in entries:
            raise KnowledgeBaseError(
                f"{origin}: node {entry.node_id!r} already has an entry ({entries[entry.node_id].origin})"
            )
        entries[entry.node_id] = entry
    return KnowledgeBase(entries=entries, root=root)


def _jsonl_entries(path: Path) -> Iterable[tuple[dict[str, Any], str]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path.name}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise KnowledgeBaseError(f"{origin}: not valid JSON: {error}") from None
            if not isinstance(raw, dict):
                raise KnowledgeBaseError(f"{origin}: each line must be a JSON object")
            yield raw, origin
