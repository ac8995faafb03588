"""Property tests: any completion gets a finite reward in [0, max] and a reason, and the
hierarchical terms are monotone along the tree. Run on the tiny tree and, once it ships, the real one."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewards import MALIGNANCY_SOURCES, RewardConfig, RewardSample, RewardScorer
from skinr1.prompts import DEFAULT_FORMAT, ChoiceOption, parse_completion
from skinr1.prompts.parser import _parse_slow
from reward_helpers import good, tiny_resolver

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIGS = {
    "open": RewardConfig.preset("open", differential_weight=0.1),
    "paper": RewardConfig.preset("paper"),
    "weighted": RewardConfig.preset("open", level_weights=(3.0, 2.0, 1.0)),
    "strict": RewardConfig.preset("open", require_format_for_content=True, malignancy_source="stated_or_node"),
    "three_classes": RewardConfig.preset("paper", malignancy_classes=3),
}


def _resolvers():
    yield pytest.param(tiny_resolver, id="tiny")
    from skinr1.taxonomy import default_resolver

    yield pytest.param(default_resolver, id="shipped")


@pytest.fixture(scope="module", params=list(_resolvers()))
def tax(request):
    return request.param().taxonomy


@pytest.fixture(scope="module")
def scorers(tax):
    return {name: RewardScorer(config, tax) for name, config in CONFIGS.items()}


# Fragments that make tag soup: the real tags, broken tags, names, letters, malignancy suffixes.
FRAGMENTS = [
    DEFAULT_FORMAT.reasoning_open, DEFAULT_FORMAT.reasoning_close, DEFAULT_FORMAT.answer_open, DEFAULT_FORMAT.answer_close,
    "<thinking", "</final diagnosis", "<final diagnosis>>", "<>", "</>", "B. ", "(C)", " (malignant)", " (benign)",
    "(", ")", "melanoma", "BCC", "nevi", "the ", "malignant", "\n", "  ", "\x00", "\ufffd", "é", "🙂", "A", "D",
]
text_like = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=20).map("".join),
)


def assert_sane(result, scorer):
    assert math.isfinite(result.reward)
    assert 0.0 <= result.reward <= scorer.max_reward + 1e-9
    assert result.reasons and "internal_error" not in result.reasons and result.error is None
    assert result.reward == pytest.approx(sum(result.components.values()))


def choice_sample(tax, gt, others):
    nodes = list(dict.fromkeys([gt, *others]))[:4]
    return RewardSample(gt, "choice", tuple(ChoiceOption("ABCD"[i], n, tax.node(n).name) for i, n in enumerate(nodes)))


class TestBounds:
    @PROPERTY_SETTINGS
    @given(text=text_like, data=st.data())
    def test_any_text(self, tax, scorers, text, data):
        node_ids = sorted(tax.nodes)
        gt = data.draw(st.sampled_from(node_ids))
        others = data.draw(st.lists(st.sampled_from(node_ids), max_size=3))
        for name, scorer in scorers.items():
            sample = choice_sample(tax, gt, others) if scorer.config.mode == "choice" else RewardSample(gt, "open")
            assert_sane(scorer.score(text, sample), scorer)

    @PROPERTY_SETTINGS
    @given(reasoning=text_like, answer=text_like, data=st.data())
    def test_any_content_in_well_formed_blocks(self, tax, scorers, reasoning, answer, data):
        gt = data.draw(st.sampled_from(sorted(tax.nodes)))
        for name, scorer in scorers.items():
            sample = choice_sample(tax, gt, []) if scorer.config.mode == "choice" else RewardSample(gt, "open")
            assert_sane(scorer.score(good(answer, reasoning), sample), scorer)

    @pytest.mark.parametrize("text", [
        "x" * 1_000_000,
        good("melanoma (malignant)", reasoning="word " * 200_000),
        good("melanoma", reasoning="<thinking>" * 50_000),
        "<final diagnosis>" * 100_000,
        bytes(range(256)).decode("latin-1") * 4000,
    ])
    def test_huge_inputs(self, tax, scorers, text):
        for scorer in scorers.values():
            sample = choice_sample(tax, "melanoma", []) if scorer.config.mode == "choice" else RewardSample("melanoma", "open")
            assert_sane(scorer.score(text, sample), scorer)


class TestParserProperties:
    @PROPERTY_SETTINGS
    @given(text=text_like)
    def test_never_raises_and_ok_means_ok(self, text):
        parsed = parse_completion(text)
        assert parsed.format_ok == (parsed.format_reason == "ok")
        if parsed.format_ok:
            stripped = text.strip()
            assert stripped.startswith(DEFAULT_FORMAT.reasoning_open) and stripped.endswith(DEFAULT_FORMAT.answer_close)
            assert parsed.reasoning.strip() and parsed.answer_text

    @PROPERTY_SETTINGS
    @given(text=st.one_of(text_like, st.builds(good, text_like, text_like)))
    def test_fast_path_agrees_with_the_full_parse(self, text):
        if text.strip():  # blank text is answered before either path runs
            assert parse_completion(text) == _parse_slow(text, DEFAULT_FORMAT)

    @PROPERTY_SETTINGS
    @given(reasoning=st.text(min_size=1), answer=st.text(min_size=1, max_size=400))
    def test_round_trip(self, reasoning, answer):
        tags = ("<thinking>", "</thinking>", "<final diagnosis>", "</final diagnosis>")
        if not reasoning.strip() or not answer.strip() or any(t in reasoning + answer for t in tags):
            return
        parsed = parse_completion(DEFAULT_FORMAT.render(reasoning, answer))
        assert parsed.format_ok and parsed.answer_text == answer.strip() and parsed.reasoning == reasoning


class TestMonotonicity:
    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_deeper_correct_node_never_scores_lower(self, tax, scorers, data):
        # Any node of a root-to-node path is "correct" for a truth on that path: an ancestor of the
        # truth, the truth, or a subtype of it.
        path = tax.path(data.draw(st.sampled_from(sorted(tax.nodes))))
        gt = data.draw(st.sampled_from(path))
        suffix = data.draw(st.sampled_from(["", " (malignant)", " (benign)"]))
        for scorer in scorers.values():
            if scorer.config.malignancy_source != "stated":
                continue  # a subtype may carry another class than its coarse label (AK under malignant)
            # In choice mode only the truth and its ancestors are correct options.
            correct = path if scorer.config.mode == "open" else path[: path.index(gt) + 1]
            i, j = sorted(data.draw(st.lists(st.integers(0, len(correct) - 1), min_size=2, max_size=2)))
            shallow, deep = correct[i], correct[j]
            if scorer.config.mode == "choice":
                sample = choice_sample(tax, gt, [shallow, deep])
                letters = {o.node_id: o.letter for o in sample.options}
                answers = [f"{letters[n]}. {tax.node(n).name}{suffix}" for n in (shallow, deep)]
            else:
                sample = RewardSample(gt, "open")
                answers = [f"{tax.node(n).name}{suffix}" for n in (shallow, deep)]
            low, high = (scorer.score(good(a), sample).reward for a in answers)
            assert high >= low - 1e-12

    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_wrong_category_never_beats_right_category(self, tax, scorers, data):
        gt = data.draw(st.sampled_from(sorted(tax.nodes)))
        category = tax.path(gt)[0]
        same = [n for n in sorted(tax.nodes) if tax.path(n)[0] == category]
        other = [n for n in sorted(tax.nodes) if tax.path(n)[0] != category]
        if not other:
            return
        right, wrong = data.draw(st.sampled_from(same)), data.draw(st.sampled_from(other))
        suffix = data.draw(st.sampled_from(["", " (malignant)", " (non-neoplastic)"]))
        scorer = scorers["open"]  # the stated suffix is shared, so only the node differs
        sample = RewardSample(gt, "open")
        r_right = scorer.score(good(tax.node(right).name + suffix), sample)
        r_wrong = scorer.score(good(tax.node(wrong).name + suffix), sample)
        assert r_right.reward >= r_wrong.reward
        assert r_wrong.reasons[1] == "hierarchical:wrong_category"

    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_caching_does_not_change_results(self, tax, scorers, data):
        gt, pred = (data.draw(st.sampled_from(sorted(tax.nodes))) for _ in range(2))
        fresh = RewardScorer(CONFIGS["open"], tax)
        text = good(tax.node(pred).name)
        sample = RewardSample(gt, "open")
        assert fresh.score(text, sample) == scorers["open"].score(text, sample) == fresh.score(text, sample)


class TestMalignancyClasses:
    @PROPERTY_SETTINGS
    @given(data=st.data())
    def test_three_classes_only_merge(self, tax, data):
        """Three classes merge non-neoplastic into benign: what is right with four stays right, and
        the two differ only where that merge is involved."""
        gt, pred = (data.draw(st.sampled_from(sorted(tax.nodes))) for _ in range(2))
        suffix = data.draw(st.sampled_from(["", " (benign)", " (precancerous)", " (malignant)", " (non-neoplastic)"]))
        source = data.draw(st.sampled_from(MALIGNANCY_SOURCES))
        text, sample = good(tax.node(pred).name + suffix), RewardSample(gt, "open")
        four, three = (
            RewardScorer(RewardConfig.preset("open", malignancy_source=source, malignancy_classes=n), tax).score(text, sample)
            for n in (4, 3)
        )
        assert three.components["malignancy"] >= four.components["malignancy"]
        assert three.components["hierarchical"] == four.components["hierarchical"]
        if three.components["malignancy"] > four.components["malignancy"]:
            gt_classes = {tax.malignancy(n) for n in (gt, *tax.descendants(gt))}
            assert "non-neoplastic" in {*gt_classes, suffix.strip(" ()"), tax.malignancy(pred)}
