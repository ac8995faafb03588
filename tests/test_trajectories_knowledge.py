"""The knowledge base: shipped entries, both file formats, and the validation errors users see."""

from __future__ import annotations

import json

import pytest

from skinr1.taxonomy import default_taxonomy
from skinr1.trajectories.knowledge_base import (
    KNOWN_SECTIONS,
    KnowledgeBaseError,
    load_knowledge_base,
    parse_bullets,
    parse_markdown,
)
from skinr1.trajectories.verify import NameMatcher
from skinr1.trajectories.config import VerifyConfig

DEMO_LEAVES = (
    "melanoma", "melanocytic_nevus", "basal_cell_carcinoma", "squamous_cell_carcinoma",
    "seborrheic_keratosis", "dermatofibroma", "psoriasis", "vitiligo",
)
ENTRY = """---
node_id: {node_id}
sources: ["my notes"]
differentials: {differentials}
---
## Clinical features
Some text.

## Visible features
- first phrase
- second phrase
"""


@pytest.fixture(scope="module")
def taxonomy():
    return default_taxonomy()


def _write(directory, name, text):
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_shipped_base_covers_the_demo_diseases(taxonomy):
    kb = load_knowledge_base(None, taxonomy)
    for leaf in DEMO_LEAVES:
        entry = kb.entry(leaf)
        assert entry is not None, leaf
        assert set(KNOWN_SECTIONS) <= set(entry.sections), leaf
        assert entry.sources and entry.licence and entry.differentials
        assert len(entry.visible_features) >= 3
        for ancestor in taxonomy.path(leaf)[:-1]:  # the template walk has a feature at every level
            assert kb.visible_features(ancestor), ancestor


def test_shipped_visible_features_name_no_disease(taxonomy):
    # The template writer puts these phrases in reasoning, where names read as diagnoses.
    matcher = NameMatcher(taxonomy, VerifyConfig().morphology_terms)
    kb = load_knowledge_base(None, taxonomy)
    for entry in kb.entries.values():
        for phrase in entry.visible_features:
            assert matcher.find(phrase) == [], (entry.node_id, phrase)


def test_markdown_parsing():
    raw = parse_markdown(ENTRY.format(node_id="melanoma", differentials="[]") + "## Histopathology\nNests.\n", "m.md")
    assert raw["node_id"] == "melanoma"
    assert list(raw["sections"]) == ["Clinical features", "Visible features", "Histopathology"]
    assert parse_bullets(raw["sections"]["Visible features"]) == ("first phrase", "second phrase")
    assert parse_bullets("red colour; fine scale, round.") == ("red colour", "fine scale", "round")


def test_directory_and_jsonl_load_the_same_entry(tmp_path, taxonomy):
    directory = _write(tmp_path / "kb", "a.md", ENTRY.format(node_id="melanoma", differentials="[dermatofibroma]"))
    from_md = load_knowledge_base(directory, taxonomy).entry("melanoma")
    line = {
        "node_id": "melanoma", "sources": ["my notes"], "differentials": ["dermatofibroma"],
        "sections": {"Clinical features": "Some text."}, "visible_features": ["first phrase", "second phrase"],
    }
    (tmp_path / "kb.jsonl").write_text("\n" + json.dumps(line) + "\n")
    from_jsonl = load_knowledge_base(tmp_path / "kb.jsonl", taxonomy).entry("melanoma")
    for entry in (from_md, from_jsonl):
        assert entry.differentials == ("dermatofibroma",)
        assert entry.visible_features == ("first phrase", "second phrase")
        assert entry.name == "melanoma"  # defaults to the taxonomy name
    assert {p.section for p in from_jsonl.passages()} == {"Clinical features", "Visible features"}
    assert from_md.passages()[0].source == "a.md#Clinical features"
    assert from_jsonl.origin == "kb.jsonl:2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("## Clinical features\nx\n", "no YAML front matter"),
        (ENTRY.format(node_id="melanom", differentials="[]"), "unknown node_id 'melanom'"),
        (ENTRY.format(node_id="basal cell carcinoma", differentials="[]"), "did you mean 'basal_cell_carcinoma'"),
        (ENTRY.format(node_id="melanoma", differentials="[scc]"), "differential 'scc' is not a taxonomy node id"),
        (ENTRY.format(node_id="melanoma", differentials="[melanoma]"), "lists itself"),
        (ENTRY.format(node_id="melanoma", differentials="[]").replace('sources: ["my notes"]', ""), "'sources' must list"),
        (ENTRY.format(node_id="melanoma", differentials="[]").replace("sources:", "colour: red\nsources:"), "unknown key"),
        ("---\nnode_id: melanoma\nsources: [x]\n---\nstray text\n## A\nb\n", "text before the first"),
        ("---\nnode_id: melanoma\nsources: [x]\n---\n## A\nb\n## A\nc\n", "appears twice"),
        ("---\nnode_id: melanoma\nsources: [x]\n---\n## A\n\n", "no section text"),
        ("---\nnode_id: [unclosed\n---\n## A\nb\n", "not valid YAML"),
    ],
)
def test_invalid_entries_name_the_file_and_the_problem(tmp_path, taxonomy, text, message):
    directory = _write(tmp_path / "kb", "bad.md", text)
    with pytest.raises(KnowledgeBaseError, match=message) as caught:
        load_knowledge_base(directory, taxonomy)
    assert str(caught.value).startswith("bad.md")


def test_duplicate_entries_and_bad_paths(tmp_path, taxonomy):
    directory = _write(tmp_path / "kb", "a.md", ENTRY.format(node_id="melanoma", differentials="[]"))
    _write(directory, "b.md", ENTRY.format(node_id="melanoma", differentials="[]"))
    with pytest.raises(KnowledgeBaseError, match=r"b.md: node 'melanoma' already has an entry \(a.md\)"):
        load_knowledge_base(directory, taxonomy)
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        load_knowledge_base(tmp_path / "missing", taxonomy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowledgeBaseError, match="no \\*.md files"):
        load_knowledge_base(tmp_path / "empty", taxonomy)
    (tmp_path / "kb.jsonl").write_text("{not json\n")
    with pytest.raises(KnowledgeBaseError, match="kb.jsonl:1: not valid JSON"):
        load_knowledge_base(tmp_path / "kb.jsonl", taxonomy)
