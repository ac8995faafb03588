"""Batch scoring with `RewardScorer` (open and choice questions, malformed and hostile completions)
and rewards on the shipped taxonomy and label maps."""

from __future__ import annotations

import json

import pytest

import rewards.scoring
from rewards import RewardConfig, RewardSample, RewardScorer, build_sample, score_batch
from reward_helpers import good, opts, tiny_resolver


@pytest.fixture(scope="module")
def resolver():
    return tiny_resolver()


@pytest.fixture(scope="module")
def open_scorer(resolver):
    return RewardScorer(RewardConfig.preset("open"), resolver)


@pytest.fixture(scope="module")
def paper_scorer(resolver):
    return RewardScorer(RewardConfig.preset("paper"), resolver)


class TestScorerOpen:
    @pytest.mark.parametrize("label, answer, reward, reasons", [
        ("melanoma", "melanoma (malignant)", 2.0, ["format:ok", "hierarchical:exact", "malignancy:correct_stated"]),
        ("malignant melanoma", "nodular melanoma (malignant)", 2.0,
         ["format:ok", "hierarchical:more_specific", "malignancy:correct_stated"]),
        ("basal cell carcinoma", "BCC (malignant)", 2.0, ["format:ok", "hierarchical:exact", "malignancy:correct_stated"]),
        ("melanoma", "malignant melanoma (malignant)", 1.0 + 0.5 + 0.25,
         ["format:ok", "hierarchical:ancestor", "malignancy:correct_stated"]),
        ("melanoma", "melanocytic nevus (benign)", 1.0, ["format:ok", "hierarchical:wrong_category", "malignancy:wrong_stated"]),
        ("melanoma", "dragon pox (malignant)", 1.25, ["format:ok", "hierarchical:unresolved", "malignancy:correct_stated"]),
        ("melanoma", "melanoma", 1.75, ["format:ok", "hierarchical:exact", "malignancy:not_stated"]),
    ])
    def test_cases(self, open_scorer, resolver, label, answer, reward, reasons):
        result = open_scorer.score(good(answer), build_sample(resolver, label, "open"))
        assert result.reward == pytest.approx(reward)
        assert result.reasons == reasons
        assert result.reward == pytest.approx(sum(result.components.values()))
        assert list(result.components) == ["format", "hierarchical", "malignancy"]

    def test_content_without_format(self, open_scorer, resolver):
        result = open_scorer.score("<final diagnosis>melanoma (malignant)</final diagnosis>", build_sample(resolver, "mel", "open", source="ham10000"))
        assert result.reward == 1.0 and result.reasons[0] == "format:missing_reasoning"
        assert result.predicted == "melanoma"

    def test_no_answer(self, open_scorer, resolver):
        result = open_scorer.score("I think it is melanoma.", build_sample(resolver, "melanoma", "open"))
        assert result.reward == 0.0
        assert result.reasons == ["format:missing_reasoning", "hierarchical:missing_answer", "malignancy:not_stated"]

    def test_require_format_for_content(self, resolver):
        scorer = RewardScorer(RewardConfig.preset("open", require_format_for_content=True), resolver)
        sample = build_sample(resolver, "melanoma", "open")
        result = scorer.score("<final diagnosis>melanoma (malignant)</final diagnosis>", sample)
        assert result.reward == 0.0 and result.reasons[1:] == ["hierarchical:format_required", "malignancy:format_required"]
        assert scorer.score(good("melanoma (malignant)"), sample).reward == 2.0

    def test_differential(self, resolver):
        scorer = RewardScorer(RewardConfig.preset("open", differential_weight=0.1), resolver)
        sample = build_sample(resolver, "melanoma", "open")
        result = scorer.score(good("melanoma (malignant)", reasoning="Asymmetric; unlike a seborrheic keratosis."), sample)
        assert result.reward == pytest.approx(2.1) and result.reasons[-1] == "differential:named"
        assert scorer.score(good("melanoma (malignant)"), sample).components["differential"] == 0.0

    def test_binary_ablation_gives_no_partial_credit(self, resolver):
        scorer = RewardScorer(RewardConfig.preset("open", partial_credit=False), resolver)
        sample = build_sample(resolver, "melanoma", "open")
        partial = scorer.score(good("malignant melanoma (malignant)"), sample)  # right group, coarser
        assert partial.components["hierarchical"] == 0.0 and partial.reasons[1] == "hierarchical:ancestor"
        assert scorer.score(good("melanoma (malignant)"), sample).components["hierarchical"] == 0.75
        # A subtype of a coarse label is right, so it keeps the full weight.
        coarse = build_sample(resolver, "malignant melanoma", "open")
        assert scorer.score(good("nodular melanoma (malignant)"), coarse).components["hierarchical"] == 0.75

    def test_level_weights(self, resolver):
        scorer = RewardScorer(RewardConfig.preset("open", level_weights=(3.0, 2.0, 1.0)), resolver)
        result = scorer.score(good("malignant"), build_sample(resolver, "melanoma", "open"))
        assert result.components["hierarchical"] == pytest.approx(0.75 * 0.5)


class TestScorerChoice:
    @pytest.mark.parametrize("answer, reward, reason", [
        ("C. melanoma (malignant)", 2.0, "granularity:deepest_correct"),
        ("B. malignant melanoma (malignant)", 1.0 + 0.5 + 0.25, "granularity:coarser_correct"),
        ("D. dermatofibroma (benign)", 1.0, "granularity:distractor"),
        ("melanoma (malignant)", 1.25, "granularity:no_choice"),
        ("The answer is C", 1.75, "granularity:deepest_correct"),
    ])
    def test_cases(self, paper_scorer, answer, reward, reason):
        sample = RewardSample("melanoma", "choice", opts("malignant", "malignant_melanoma", "melanoma", "dermatofibroma"))
        result = paper_scorer.score(good(answer), sample)
        assert result.reward == pytest.approx(reward)
        assert result.reasons[1] == reason


class TestScorerRobustness:
    def test_mode_mismatch_and_unknown_node(self, open_scorer):
        result = open_scorer.score(good("melanoma"), RewardSample("melanoma", "choice", opts("melanoma")))
        assert result.reward == 0.0 and result.reasons == ["invalid_sample"] and "mode" in result.error
        assert open_scorer.score(good("melanoma"), RewardSample("nope", "open")).reasons == ["invalid_sample"]

    def test_internal_error_guard(self, resolver, monkeypatch):
        def boom(*args, **kwargs):
            raise RuntimeError("parser bug")

        scorer = RewardScorer(RewardConfig.preset("open"), resolver)
        monkeypatch.setattr(rewards.scoring, "parse_completion", boom)
        result = scorer.score(good("melanoma"), RewardSample("melanoma", "open"))
        assert (result.reward, result.reasons) == (0.0, ["internal_error"]) and "parser bug" in result.error

    def test_score_records(self, open_scorer):
        sample = RewardSample("melanoma", "open")
        out = open_scorer.score_records([sample.to_record(good("melanoma (malignant)")), {"completion": "x"},
                                         sample.to_record(None), "not a dict", sample.to_record(good("psoriasis")),
                                         {"gt_node": "melanoma", "mode": "open", "options": 5}])
        assert [r["reward"] for r in out] == [2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        assert out[1]["reasons"] == out[3]["reasons"] == out[5]["reasons"] == ["invalid_sample"]
        assert "error" in out[1] and "error" not in out[0]
        assert out[2]["reasons"][0] == "format:empty"
        assert json.loads(json.dumps(out)) == out

    def test_score_batch(self, resolver):
        samples = [build_sample(resolver, "melanoma", "open")] * 2
        results = score_batch([good("melanoma (malignant)"), "junk"], samples, RewardConfig.preset("open"), resolver)
        assert [r.reward for r in results] == [2.0, 0.0]
        with pytest.raises(ValueError):
            score_batch(["a"], samples, RewardConfig.preset("open"), resolver)


# ----------------------------------------------------------------------------- shipped taxonomy
class TestShipped:
    @pytest.fixture
    def shipped(self):
        from skinr1.taxonomy import default_resolver

        return default_resolver()  # cached per process

    @pytest.mark.parametrize("label, source, answer, reward", [
        ("mel", "ham10000", "melanoma (malignant)", 2.0),
        ("bcc", "ham10000", "basal cell carcinoma (malignant)", 2.0),
        ("akiec", "ham10000", "actinic keratosis (precancerous)", 2.0),  # coarse label, subtype answer
        ("akiec", "ham10000", "malignant epidermal (malignant)", 2.0),
        ("nv", "ham10000", "melanocytic nevi (benign)", 2.0),
        ("mel", "ham10000", "malignant melanoma (malignant)", 2.0),  # the clinical name of melanoma
        ("mel", "ham10000", "psoriasis (non-neoplastic)", 1.0),
    ])
    def test_open(self, shipped, label, source, answer, reward):
        scorer = RewardScorer(RewardConfig.preset("open"), shipped)
        assert scorer.score(good(answer), build_sample(shipped, label, "open", source=source)).reward == pytest.approx(reward)

    def test_choice_round_trip(self, shipped):
        import random

        from skinr1.prompts import build_messages, correct_options, make_choice_options

        tax, scorer = shipped.taxonomy, RewardScorer(RewardConfig.preset("paper"), shipped)
        pool = sorted(set(shipped.source_labels("ham10000").values()))
        for seed in range(20):
            options = make_choice_options(tax, "basal_cell_carcinoma", pool, random.Random(seed))
            assert build_messages("choice", options)[1]["content"][0] == {"type": "image"}
            best = max(correct_options(tax, "basal_cell_carcinoma", options), key=lambda o: tax.depth(o.node_id))
            sample = RewardSample("basal_cell_carcinoma", "choice", tuple(options))
            answer = f"{best.letter}. {best.name} (malignant)"
            assert scorer.score(good(answer), sample).reward == 2.0
