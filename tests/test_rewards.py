"""Reward config, the pure reward terms and reward samples (scoring: test_reward_scoring.py)."""

from __future__ import annotations

import json
import math

import pytest

from rewards import (
    RewardConfig,
    RewardSample,
    RewardScorer,
    build_sample,
    differential_reward,
    format_reward,
    granularity_reward,
    hierarchical_reward,
    malignancy_reward,
    parse_overrides,
    path_credit,
)
from rewards.functions import collapse_malignancy, ddx_pattern, deepest_correct_depth, label_classes, weighted_depth
from skinr1.prompts import parse_completion
from reward_helpers import good, opts, tiny_resolver


@pytest.fixture(scope="module")
def resolver():
    return tiny_resolver()


@pytest.fixture(scope="module")
def tax(resolver):
    return resolver.taxonomy


# ----------------------------------------------------------------------------- config
class TestConfig:
    def test_presets(self):
        paper, open_ = RewardConfig.preset("paper"), RewardConfig.preset("open")
        assert paper.components == ("format", "granularity", "malignancy") and paper.max_reward == 2.0
        assert open_.components == ("format", "hierarchical", "malignancy") and open_.max_reward == 2.0
        assert RewardConfig() == paper

    def test_overrides_and_differential(self):
        config = RewardConfig.preset("open", differential_weight=0.1, format_weight=0.5)
        assert config.components[-1] == "differential"
        assert config.max_reward == pytest.approx(0.5 + 0.75 + 0.25 + 0.1)

    @pytest.mark.parametrize("kwargs", [
        {"format_weight": -1}, {"malignancy_weight": math.nan}, {"granularity_weight": math.inf}, {"format_weight": True},
        {"mode": "essay"}, {"level_weights": (1.0, 0.0)}, {"level_weights": (-1.0,)}, {"malignancy_source": "vibes"},
        {"answer_tag": ""}, {"max_answer_chars": 0},
        {"malignancy_classes": 2}, {"malignancy_classes": 5}, {"malignancy_classes": True}, {"malignancy_classes": "3"},
    ])
    def test_validation(self, kwargs):
        with pytest.raises(ValueError):
            RewardConfig(**kwargs)

    def test_malignancy_classes(self):
        assert RewardConfig().malignancy_classes == 4  # today's scoring unless asked otherwise
        assert parse_overrides(["malignancy_classes=3"]) == {"malignancy_classes": 3}
        assert RewardConfig.from_overrides("paper", ["malignancy_classes=3"]).malignancy_classes == 3
        with pytest.raises(ValueError, match="malignancy_classes"):
            RewardConfig(malignancy_classes=2)

    def test_unknown_preset(self):
        with pytest.raises(ValueError, match="preset"):
            RewardConfig.preset("best")

    def test_parse_overrides(self):
        parsed = parse_overrides(["granularity_weight=0.5", "level_weights=3,2,1", "require_format_for_content=true",
                                  "answer_tag=answer", "max_answer_chars=100"])
        assert parsed == {"granularity_weight": 0.5, "level_weights": (3.0, 2.0, 1.0), "require_format_for_content": True,
                          "answer_tag": "answer", "max_answer_chars": 100}
        assert RewardConfig.from_overrides("paper", ["mode=open"]).accuracy_component == "hierarchical"

    @pytest.mark.parametrize("item", ["nonsense", "colour=red", "format_weight=lots", "require_format_for_content=maybe"])
    def test_bad_overrides(self, item):
        with pytest.raises(ValueError):
            parse_overrides([item])

    def test_dict_round_trip(self):
        config = RewardConfig.preset("open", level_weights=(2.0, 1.0))
        assert RewardConfig.from_dict(config.to_dict()) == config


# ----------------------------------------------------------------------------- terms
class TestFormatReward:
    def test_scores(self):
        assert format_reward(parse_completion(good("eczema")), 1.0) == (1.0, "ok")
        assert format_reward(parse_completion("eczema"), 1.0) == (0.0, "missing_reasoning")


class TestHierarchical:
    def test_weighted_depth(self):
        assert weighted_depth(3) == 3.0
        assert weighted_depth(2, (3.0, 2.0, 1.0)) == 5.0
        assert weighted_depth(5, (2.0, 1.0)) == 2.0 + 1.0 * 4

    @pytest.mark.parametrize("pred, gt, credit, reason", [
        ("melanoma", "melanoma", 1.0, "exact"),
        ("superficial_spreading_melanoma", "melanoma", 1.0, "more_specific"),  # subtype of the label
        ("melanoma", "malignant_melanoma", 1.0, "more_specific"),  # coarse label
        ("nodular_melanoma", "malignant", 1.0, "more_specific"),
        ("malignant_melanoma", "melanoma", 2 / 3, "ancestor"),
        ("malignant", "melanoma", 1 / 3, "ancestor"),
        ("basal_cell_carcinoma", "melanoma", 1 / 3, "partial"),  # same category, other group
        ("superficial_spreading_melanoma", "nodular_melanoma", 3 / 4, "partial"),
        ("psoriasis", "melanoma", 0.0, "wrong_category"),
        ("benign", "malignant", 0.0, "wrong_category"),
    ])
    def test_path_credit(self, tax, pred, gt, credit, reason):
        got, why = path_credit(tax, pred, gt)
        assert got == pytest.approx(credit) and why == reason

    def test_level_weights(self, tax):
        assert path_credit(tax, "malignant", "melanoma", (3.0, 2.0, 1.0))[0] == pytest.approx(3 / 6)
        assert path_credit(tax, "malignant_melanoma", "melanoma", (3.0, 2.0, 1.0))[0] == pytest.approx(5 / 6)

    def test_weight_and_unresolved(self, tax):
        assert hierarchical_reward(tax, "malignant_melanoma", "melanoma", 0.75) == (pytest.approx(0.5), "ancestor")
        assert hierarchical_reward(tax, None, "melanoma", 0.75) == (0.0, "unresolved")
        assert hierarchical_reward(tax, None, "melanoma", 0.75, why="missing_answer") == (0.0, "missing_answer")


class TestGranularity:
    OPTIONS = ("malignant", "malignant_melanoma", "melanoma", "dermatofibroma")

    @pytest.mark.parametrize("chosen, score, reason", [
        ("melanoma", 0.75, "deepest_correct"),
        ("malignant_melanoma", 0.5, "coarser_correct"),
        ("malignant", 0.25, "coarser_correct"),
        ("dermatofibroma", 0.0, "distractor"),
        (None, 0.0, "no_choice"),
    ])
    def test_paper_rule(self, tax, chosen, score, reason):
        deepest = deepest_correct_depth(tax, self.OPTIONS, "melanoma")
        assert granularity_reward(tax, chosen, "melanoma", deepest, 0.75) == (pytest.approx(score), reason)

    def test_relative_to_the_deepest_offered(self, tax):
        options = ("malignant", "malignant_melanoma", "psoriasis", "vitiligo")  # the leaf is not offered
        deepest = deepest_correct_depth(tax, options, "melanoma")
        assert granularity_reward(tax, "malignant_melanoma", "melanoma", deepest, 0.75) == (0.75, "deepest_correct")

    def test_subtype_of_the_label_is_not_correct(self, tax):
        # A deeper node than the label is not known to be true, so it only appears as a distractor.
        deepest = deepest_correct_depth(tax, ("melanoma", "superficial_spreading_melanoma"), "melanoma")
        assert granularity_reward(tax, "superficial_spreading_melanoma", "melanoma", deepest, 0.75)[1] == "distractor"

    def test_no_correct_option(self, tax):
        assert deepest_correct_depth(tax, ("psoriasis",), "melanoma") == 0
        assert granularity_reward(tax, "psoriasis", "melanoma", 0, 0.75) == (0.0, "distractor")


class TestMalignancy:
    @pytest.mark.parametrize("gt, stated, pred, source, score, reason", [
        ("melanoma", "malignant", None, "stated", 0.25, "correct_stated"),
        ("melanoma", "benign", "melanoma", "stated", 0.0, "wrong_stated"),
        ("melanoma", None, "melanoma", "stated", 0.0, "not_stated"),
        ("actinic_keratosis", "precancerous", None, "stated", 0.25, "correct_stated"),
        ("actinic_keratosis", "malignant", None, "stated", 0.0, "wrong_stated"),  # its group is malignant, it is not
        ("eczema", "non-neoplastic", None, "stated", 0.25, "correct_stated"),
        ("melanoma", "benign", "basal_cell_carcinoma", "node", 0.25, "correct_node"),
        ("melanoma", None, "melanocytic_nevus", "node", 0.0, "wrong_node"),
        ("melanoma", None, None, "node", 0.0, "no_prediction"),
        ("melanoma", "benign", "melanoma", "stated_or_node", 0.0, "wrong_stated"),
        ("melanoma", None, "melanoma", "stated_or_node", 0.25, "correct_node"),
        # A coarse label covers subtypes of another class: any class below it is consistent with it.
        ("malignant_epidermal", "precancerous", None, "stated", 0.25, "correct_stated"),
        ("malignant_epidermal", "malignant", None, "stated", 0.25, "correct_stated"),
        ("malignant_epidermal", "benign", None, "stated", 0.0, "wrong_stated"),
        ("malignant_epidermal", None, "actinic_keratosis", "node", 0.25, "correct_node"),
        ("actinic_keratosis", None, "malignant_epidermal", "node", 0.0, "wrong_node"),
    ])
    def test_cases(self, tax, gt, stated, pred, source, score, reason):
        assert malignancy_reward(tax, gt, stated, pred, 0.25, source) == (score, reason)


class TestThreeMalignancyClasses:
    """The paper's benign / precancerous / malignant: non-neoplastic counts as benign."""

    @pytest.mark.parametrize("cls, three", [
        ("benign", "benign"), ("precancerous", "precancerous"), ("malignant", "malignant"), ("non-neoplastic", "benign"),
    ])
    def test_collapse(self, cls, three):
        assert collapse_malignancy(cls, 3) == three
        assert collapse_malignancy(cls, 4) == cls == collapse_malignancy(cls)

    def test_collapse_rejects_other_counts(self):
        with pytest.raises(ValueError, match="3 or 4"):
            collapse_malignancy("benign", 2)

    def test_label_classes(self, tax):
        assert label_classes(tax, "non_neoplastic", 3) == {"benign"}
        assert label_classes(tax, "non_neoplastic") == {"non-neoplastic"}
        assert label_classes(tax, "malignant_epidermal", 3) == {"malignant", "precancerous"}

    @pytest.mark.parametrize("gt, stated, pred, source, four, three", [
        ("eczema", "benign", None, "stated", (0.0, "wrong_stated"), (0.25, "correct_stated")),
        ("dermatofibroma", "non-neoplastic", None, "stated", (0.0, "wrong_stated"), (0.25, "correct_stated")),
        ("eczema", "non-neoplastic", None, "stated", (0.25, "correct_stated"), (0.25, "correct_stated")),
        ("melanoma", "non-neoplastic", None, "stated", (0.0, "wrong_stated"), (0.0, "wrong_stated")),
        ("actinic_keratosis", "benign", None, "stated", (0.0, "wrong_stated"), (0.0, "wrong_stated")),
        ("dermatofibroma", None, "psoriasis", "node", (0.0, "wrong_node"), (0.25, "correct_node")),
        ("vitiligo", None, "melanocytic_nevus", "stated_or_node", (0.0, "wrong_node"), (0.25, "correct_node")),
    ])
    def test_cases(self, tax, gt, stated, pred, source, four, three):
        assert malignancy_reward(tax, gt, stated, pred, 0.25, source) == four
        assert malignancy_reward(tax, gt, stated, pred, 0.25, source, classes=3) == three
        assert malignancy_reward(tax, gt, stated, pred, 0.25, source, label_classes(tax, gt, 3), 3) == three

    @pytest.mark.parametrize("label, answer", [("eczema", "eczema (benign)"), ("dermatofibroma", "dermatofibroma (non-neoplastic)"),
                                               ("dermatofibroma", "dermatofibroma (Non neoplastic)")])
    def test_scorer(self, resolver, label, answer):
        sample = build_sample(resolver, label, "open")
        three = RewardScorer(RewardConfig.preset("open", malignancy_classes=3), resolver).score(good(answer), sample)
        four = RewardScorer(RewardConfig.preset("open"), resolver).score(good(answer), sample)
        assert three.components["malignancy"] == 0.25 and three.reasons[-1] == "malignancy:correct_stated"
        assert four.components["malignancy"] == 0.0 and four.reasons[-1] == "malignancy:wrong_stated"
        assert three.reward == four.reward + 0.25


class TestDifferential:
    def test_names_a_neighbour(self, tax):
        pattern = ddx_pattern(tax, "melanoma")
        assert differential_reward("Unlike a benign Melanocytic-Nevus, this ...", pattern, 0.1) == (0.1, "named")
        assert differential_reward("An SK would be waxy.", pattern, 0.1) == (0.1, "named")  # synonym
        assert differential_reward("Low risk features; no history of change.", pattern, 0.1) == (0.0, "not_named")
        assert differential_reward("", pattern, 0.1) == (0.0, "not_named")

    def test_no_known_ddx(self, tax):
        assert ddx_pattern(tax, "dermatofibroma") is None
        assert differential_reward("anything", None, 0.1) == (0.0, "no_known_ddx")


# ----------------------------------------------------------------------------- samples
class TestBuildSample:
    def test_source_label(self, resolver):
        sample = build_sample(resolver, "mel", "open", source="ham10000")
        assert (sample.gt_node, sample.label, sample.source) == ("melanoma", "mel", "ham10000")

    def test_coarse_and_synonym_labels(self, resolver):
        assert build_sample(resolver, "Malignant Melanoma", "open").gt_node == "malignant_melanoma"
        assert build_sample(resolver, "basalioma", "open").gt_node == "basal_cell_carcinoma"

    @pytest.mark.parametrize("label, source", [("unk", "ham10000"), ("dragon pox", None), ("", None)])
    def test_unmapped_truth_is_rejected(self, resolver, label, source):
        with pytest.raises(ValueError, match="ground-truth label"):
            build_sample(resolver, label, "open", source=source)

    def test_choice(self, resolver):
        sample = build_sample(resolver, "bcc", "choice", ["malignant", "B. BCC", "df", "vitiligo"], "ham10000")
        assert [o.node_id for o in sample.options] == ["malignant", "basal_cell_carcinoma", "dermatofibroma", "vitiligo"]
        with pytest.raises(ValueError, match="options"):
            build_sample(resolver, "bcc", "choice", source="ham10000")
        with pytest.raises(ValueError, match="mode"):
            build_sample(resolver, "bcc", "essay")

    def test_record_round_trip(self, tax):
        sample = RewardSample("melanoma", "choice", opts("malignant", "melanoma"), "mel", "ham10000")
        record = sample.to_record("text")
        assert json.loads(json.dumps(record))["completion"] == "text"
        assert RewardSample.from_record(record, tax) == sample

    @pytest.mark.parametrize("record", [{}, {"gt_node": "nope", "mode": "open"}, {"gt_node": "melanoma", "mode": "choice"},
                                        {"gt_node": "melanoma", "mode": "open", "options": [{"letter": "A"}]}])
    def test_bad_records(self, tax, record):
        with pytest.raises(ValueError):
            RewardSample.from_record(record, tax)
