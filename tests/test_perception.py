"""Perception pretraining of the tiny base model: captions describe, never diagnose; the stage trains."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from skinr1.data.synthetic import DEMO_LEAVES, load_taxonomy
from skinr1.models.perception import (
    SKIN_TONE_WORDS,
    PerceptionSettings,
    caption_features,
    caption_plan,
    write_caption,
)
from skinr1.trajectories.knowledge_base import load_knowledge_base


@pytest.fixture(scope="module")
def taxonomy_and_kb():
    taxonomy = load_taxonomy()
    return taxonomy, load_knowledge_base(None, taxonomy)


def _diagnosis_names(taxonomy) -> set[str]:
    names = set()
    for node in taxonomy.nodes.values():
        names.add(node.name.lower())
        names.update(s.lower() for s in node.synonyms)
    return names


def test_captions_name_no_category_group_or_disease(taxonomy_and_kb):
    taxonomy, kb = taxonomy_and_kb
    names = _diagnosis_names(taxonomy)
    rng = random.Random(0)
    for leaf in DEMO_LEAVES:
        features = caption_features(taxonomy.path(leaf), kb.visible_features)
        assert features, leaf
        for fitzpatrick in SKIN_TONE_WORDS:
            caption = write_caption(features, fitzpatrick, rng).lower()
            leaked = [n for n in names if re.search(rf"\b{re.escape(n)}\b", caption)]
            assert not leaked, (leaf, caption, leaked)
            assert SKIN_TONE_WORDS[fitzpatrick] in caption


def test_caption_features_cover_every_level_once(taxonomy_and_kb):
    taxonomy, kb = taxonomy_and_kb
    path = taxonomy.path("melanoma")
    features = caption_features(path, kb.visible_features)
    expected = [f for level in path for f in kb.visible_features(level)]
    assert features == list(dict.fromkeys(expected))
    assert set(kb.visible_features("melanoma")) <= set(features)


def test_caption_plan_crosses_classes_and_skin_types_evenly():
    plan = caption_plan(96, DEMO_LEAVES, range(1, 7), seed=3)
    assert Counter((leaf, skin) for leaf, skin, _ in plan) == Counter({(l, s): 2 for l in DEMO_LEAVES for s in range(1, 7)})
    assert sorted(index for *_, index in plan) == list(range(96))
    assert plan == caption_plan(96, DEMO_LEAVES, range(1, 7), seed=3)


@pytest.mark.parametrize("field, value", [("images", -1), ("epochs", 0), ("learning_rate", float("nan")),
                                          ("learning_rate", 0.0), ("batch_size", 0)])
def test_bad_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        PerceptionSettings(**{field: value})


def test_pretraining_lowers_the_caption_loss_and_saves_the_model(tmp_path):
    from skinr1.models.perception import pretrain_perception
    from skinr1.models.tiny import build_tiny_model
    from safetensors.torch import load_file

    model_dir = build_tiny_model(tmp_path / "model")
    before = load_file(model_dir / "model.safetensors")
    summary = pretrain_perception(model_dir, PerceptionSettings(images=96, epochs=2, batch_size=8), seed=0)
    after = load_file(model_dir / "model.safetensors")
    assert summary["images"] == 96 and summary["steps"] == 24
    assert summary["caption_loss_last"] < 0.6 * summary["caption_loss_first"], summary
    # Every weight trains, the vision encoder included (the point: eyes for all skin types).
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert any("visual.blocks" in name for name in changed)
