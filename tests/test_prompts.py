"""Answer format, question templates, multiple-choice options and the completion parser.

The small hand-made tree and `good()` come from tests/reward_helpers.py.
"""

from __future__ import annotations

import random

import pytest

from skinr1.prompts import (
    DEFAULT_FORMAT,
    AnswerFormat,
    ChoiceOption,
    build_messages,
    correct_options,
    make_choice_options,
    options_from_labels,
    parse_completion,
    resolve_answer,
    system_prompt,
)
from reward_helpers import good, tiny_resolver

from skinr1.taxonomy import LabelResolver, Taxonomy



@pytest.fixture(scope="module")
def resolver() -> LabelResolver:
    return tiny_resolver()


@pytest.fixture(scope="module")
def tax(resolver) -> Taxonomy:
    return resolver.taxonomy


# ----------------------------------------------------------------------------- format
class TestAnswerFormat:
    def test_defaults_are_the_papers_tags(self):
        fmt = AnswerFormat()
        assert (fmt.reasoning_open, fmt.reasoning_close) == ("<thinking>", "</thinking>")
        assert (fmt.answer_open, fmt.answer_close) == ("<final diagnosis>", "</final diagnosis>")

    def test_render(self):
        text = DEFAULT_FORMAT.render("why", "basal cell carcinoma", "malignant", letter="B")
        assert text == "<thinking>why</thinking>\n<final diagnosis>B. basal cell carcinoma (malignant)</final diagnosis>"

    @pytest.mark.parametrize("kwargs", [{"reasoning_tag": ""}, {"answer_tag": "a>b"}, {"answer_tag": "/x"},
                                        {"answer_tag": "thinking"}, {"max_answer_chars": 0}])
    def test_invalid(self, kwargs):
        with pytest.raises(ValueError):
            AnswerFormat(**kwargs)

    @pytest.mark.parametrize("mode", ["open", "choice"])
    def test_system_prompt_states_the_format(self, mode):
        fmt = AnswerFormat("think", "answer")
        text = system_prompt(fmt, mode)
        assert "<think></think>" in text and "<answer></answer>" in text
        assert all(c in text for c in ("benign", "precancerous", "malignant", "non-neoplastic"))
        assert ("<answer>B. basal cell carcinoma (malignant)</answer>" in text) == (mode == "choice")

    def test_unknown_mode(self):
        with pytest.raises(ValueError, match="mode"):
            system_prompt(DEFAULT_FORMAT, "essay")


# ----------------------------------------------------------------------------- templates
class TestMessages:
    def test_open(self):
        messages = build_messages("open")
        assert [m["role"] for m in messages] == ["system", "user"]
        user = messages[1]["content"]
        assert user[0] == {"type": "image"} and user[1]["type"] == "text"
        assert "diagnosis" in user[1]["text"]

    def test_choice_lists_options(self, tax):
        options = make_choice_options(tax, "melanoma", ["dermatofibroma", "psoriasis", "vitiligo"], random.Random(0))
        text = build_messages("choice", options)[1]["content"][1]["text"]
        for option in options:
            assert f"{option.letter}. {option.name}" in text

    def test_variants_differ_and_wrap(self):
        texts = [build_messages("open", question_variant=i)[1]["content"][1]["text"] for i in range(4)]
        assert texts[0] != texts[1] and texts[3] == texts[0]

    def test_errors(self):
        with pytest.raises(ValueError):
            build_messages("choice")
        with pytest.raises(ValueError):
            build_messages("open", question_variant=-1)


# ----------------------------------------------------------------------------- choice options
class TestChoiceOptions:
    POOL = ["melanoma", "melanocytic_nevus", "basal_cell_carcinoma", "actinic_keratosis", "seborrheic_keratosis",
            "dermatofibroma", "superficial_spreading_melanoma", "malignant"]

    @pytest.mark.parametrize("gt", ["melanoma", "basal_cell_carcinoma", "superficial_spreading_melanoma", "benign", "psoriasis"])
    def test_shape_and_correctness(self, tax, gt):
        for seed in range(40):
            options = make_choice_options(tax, gt, self.POOL, random.Random(seed))
            assert [o.letter for o in options] == list("ABCD")
            assert len({o.node_id for o in options}) == 4
            correct = correct_options(tax, gt, options)
            assert 1 <= len(correct) <= min(3, tax.depth(gt))
            for option in options:
                assert option.name == tax.node(option.node_id).name
                if option not in correct:  # a distractor is neither above nor below the truth
                    assert not tax.is_ancestor(gt, option.node_id) and not tax.is_ancestor(option.node_id, gt)

    def test_deterministic_and_pool_order_free(self, tax):
        a = make_choice_options(tax, "melanoma", self.POOL, random.Random(7))
        b = make_choice_options(tax, "melanoma", set(reversed(self.POOL)), random.Random(7))
        assert a == b

    def test_samples_vary_with_seed(self, tax):
        seen = {tuple(make_choice_options(tax, "melanoma", self.POOL, random.Random(s))) for s in range(20)}
        assert len(seen) > 5

    def test_small_pool_is_filled_with_unrelated_nodes(self, tax):
        options = make_choice_options(tax, "melanoma", ["nodular_melanoma"], random.Random(1))
        assert len(options) == 4
        assert "nodular_melanoma" not in {o.node_id for o in options}  # a subtype would also be true

    def test_unknown_truth(self, tax):
        with pytest.raises(KeyError):
            make_choice_options(tax, "nope", self.POOL, random.Random(0))

    def test_options_from_labels(self, resolver):
        options = options_from_labels(resolver, ["A. mel", "(B) BCC", {"node_id": "psoriasis"}, "moles"], "ham10000")
        assert [(o.letter, o.node_id) for o in options] == [
            ("A", "melanoma"), ("B", "basal_cell_carcinoma"), ("C", "psoriasis"), ("D", "melanocytic_nevus")]
        with pytest.raises(ValueError, match="option B"):
            options_from_labels(resolver, ["melanoma", "unk"], "ham10000")
        with pytest.raises(ValueError, match="at most"):
            options_from_labels(resolver, ["melanoma"] * 5)


# ----------------------------------------------------------------------------- parser
class TestParser:
    def test_well_formed(self):
        parsed = parse_completion(good("basal cell carcinoma (malignant)"))
        assert parsed.format_ok and parsed.format_reason == "ok"
        assert parsed.reasoning == "Pearly papule with telangiectasia."
        assert parsed.answer_text == "basal cell carcinoma (malignant)"
        assert parsed.diagnosis == "basal cell carcinoma"
        assert parsed.stated_malignancy == "malignant"
        assert parsed.choice_letter is None

    def test_choice_answer(self):
        parsed = parse_completion(good("B. basal cell carcinoma (malignant)"))
        assert parsed.choice_letter == "B" and parsed.diagnosis == "basal cell carcinoma"

    def test_whitespace_around_blocks_is_fine(self):
        assert parse_completion("\n  <thinking> x </thinking>\n\n<final diagnosis> eczema </final diagnosis>\n ").format_ok

    def test_custom_tags(self):
        fmt = AnswerFormat("think", "answer")
        assert parse_completion(good("eczema", fmt=fmt), fmt).format_ok
        assert parse_completion(good("eczema"), fmt).format_reason == "missing_reasoning"

    @pytest.mark.parametrize("text, reason", [
        ("", "empty"),
        ("   \n", "empty"),
        ("melanoma", "missing_reasoning"),
        ("<thinking>x</thinking>", "missing_answer"),
        ("<final diagnosis>melanoma</final diagnosis>", "missing_reasoning"),
        ("<thinking>x <final diagnosis>melanoma</final diagnosis>", "unclosed_reasoning"),
        ("<thinking>x</thinking><final diagnosis>melanoma", "unclosed_answer"),
        ("<thinking>x</thinking><thinking>y</thinking><final diagnosis>melanoma</final diagnosis>", "duplicate_reasoning"),
        ("<thinking><thinking>x</thinking></thinking><final diagnosis>melanoma</final diagnosis>", "duplicate_reasoning"),
        ("<thinking>x</thinking><final diagnosis>a</final diagnosis><final diagnosis>b</final diagnosis>", "duplicate_answer"),
        ("<final diagnosis>melanoma</final diagnosis><thinking>x</thinking>", "answer_before_reasoning"),
        ("<thinking>x<final diagnosis>melanoma</final diagnosis></thinking>", "nested_tags"),
        ("<final diagnosis><thinking>x</thinking>melanoma</final diagnosis>", "nested_tags"),
        ("Sure! <thinking>x</thinking><final diagnosis>melanoma</final diagnosis>", "text_outside_tags"),
        ("<thinking>x</thinking> so <final diagnosis>melanoma</final diagnosis>", "text_outside_tags"),
        ("<thinking>x</thinking><final diagnosis>melanoma</final diagnosis> Hope this helps", "text_outside_tags"),
        ("<thinking>  </thinking><final diagnosis>melanoma</final diagnosis>", "empty_reasoning"),
        ("<thinking>x</thinking><final diagnosis> </final diagnosis>", "empty_answer"),
        ("<thinking>x</thinking><final diagnosis>" + "melanoma " * 100 + "</final diagnosis>", "answer_too_long"),
        ("<Thinking>x</Thinking><final diagnosis>melanoma</final diagnosis>", "missing_reasoning"),
    ])
    def test_format_failures(self, text, reason):
        parsed = parse_completion(text)
        assert not parsed.format_ok
        assert parsed.format_reason == reason

    def test_answer_is_read_when_only_the_rest_is_wrong(self):
        parsed = parse_completion("Sure! <final diagnosis>eczema</final diagnosis>")
        assert not parsed.format_ok and parsed.answer_text == "eczema"

    @pytest.mark.parametrize("text, reason", [
        ("<thinking>x</thinking><final diagnosis>a</final diagnosis><final diagnosis>b</final diagnosis>", "duplicate_answer"),
        ("<thinking>x</thinking><final diagnosis>" + "x" * 501 + "</final diagnosis>", "answer_too_long"),
        ("<thinking>x</thinking><final diagnosis>melanoma", "unclosed_answer"),
    ])
    def test_no_answer_when_ambiguous(self, text, reason):
        parsed = parse_completion(text)
        assert parsed.answer_text == "" and parsed.answer_reason == reason

    def test_completion_too_long(self):
        text = good("melanoma", reasoning="x" * 300_000)
        assert parse_completion(text).format_reason == "completion_too_long"
        assert parse_completion(text, AnswerFormat(max_completion_chars=10**6)).format_ok

    @pytest.mark.parametrize("value", [None, 42, b"<thinking>"])
    def test_non_strings(self, value):
        assert not parse_completion(value).format_ok

    @pytest.mark.parametrize("answer, malignancy, diagnosis", [
        ("melanoma (Malignant)", "malignant", "melanoma"),
        ("actinic keratosis (pre-cancerous).", "precancerous", "actinic keratosis"),
        ("actinic keratosis (premalignant)", "precancerous", "actinic keratosis"),
        ("eczema (non neoplastic)", "non-neoplastic", "eczema"),
        ("eczema (Non-Neoplastic)", "non-neoplastic", "eczema"),
        ("melanoma (superficial spreading)", None, "melanoma (superficial spreading)"),
        ("melanoma (benign or malignant)", None, "melanoma (benign or malignant)"),
        ("melanoma", None, "melanoma"),
    ])
    def test_malignancy_suffix(self, answer, malignancy, diagnosis):
        parsed = parse_completion(good(answer))
        assert (parsed.stated_malignancy, parsed.diagnosis) == (malignancy, diagnosis)

    @pytest.mark.parametrize("answer, letter", [
        ("B. basal cell carcinoma", "B"), ("(C) eczema", "C"), ("Option D: vitiligo", "D"), ("A", "A"),
        ("I choose B", "B"), ("B or C", "B"), ("a melanoma", None), ("Actinic keratosis", None), ("E. none", None),
    ])
    def test_choice_letter(self, answer, letter):
        assert parse_completion(good(answer)).choice_letter == letter


# ----------------------------------------------------------------------------- resolve_answer
class TestResolveAnswer:
    @pytest.mark.parametrize("answer, node", [
        ("basal cell carcinoma (malignant)", "basal_cell_carcinoma"),
        ("Basal-Cell Carcinoma.", "basal_cell_carcinoma"),
        ("BCC", "basal_cell_carcinoma"),  # synonym
        ("the melanocytic nevi", "melanocytic_nevus"),  # article + plural
        ("Superficial spreading melanoma (malignant)", "superficial_spreading_melanoma"),  # subtype
        ("malignant melanoma", "malignant_melanoma"),  # coarse group
        ("melanoma (nodular type) (malignant)", "melanoma"),  # unknown qualifier dropped
        ("A. eczema", "eczema"),  # a stray letter prefix in open mode
    ])
    def test_open(self, resolver, answer, node):
        assert resolve_answer(parse_completion(good(answer)), resolver, "open") == (node, "resolved")

    def test_taxonomy_or_resolver(self, resolver):
        parsed = parse_completion(good("SCC"))
        assert resolve_answer(parsed, resolver.taxonomy, "open") == resolve_answer(parsed, resolver, "open")

    @pytest.mark.parametrize("answer", ["melanoma or nevus", "dragon pox", "mel"])
    def test_open_unresolved(self, resolver, answer):
        # "mel" is a HAM10000 code: model answers are free text and never read as dataset labels.
        assert resolve_answer(parse_completion(good(answer)), resolver, "open") == (None, "unresolved")

    def test_no_answer_reason_passes_through(self, resolver):
        assert resolve_answer(parse_completion("<thinking>x</thinking>"), resolver, "open") == (None, "missing_answer")

    def test_choice(self, resolver):
        options = [ChoiceOption("A", "melanoma", "melanoma"), ChoiceOption("B", "psoriasis", "psoriasis")]
        assert resolve_answer(parse_completion(good("B. melanoma")), resolver, "choice", options) == ("psoriasis", "chosen")
        assert resolve_answer(parse_completion(good("melanoma")), resolver, "choice", options) == (None, "no_choice")
        assert resolve_answer(parse_completion(good("D. x")), resolver, "choice", options) == (None, "invalid_choice")


# ----------------------------------------------------------------------------- shipped taxonomy
class TestShipped:
    def test_choice_options_on_shipped_tree(self):
        from skinr1.taxonomy import default_resolver

        tax = default_resolver().taxonomy
        pool = ["melanocytic_nevus", "basal_cell_carcinoma", "seborrheic_keratosis", "dermatofibroma", "actinic_keratosis"]
        for seed in range(20):
            options = make_choice_options(tax, "melanoma", pool, random.Random(seed))
            assert len(options) == 4
            assert {o.node_id for o in correct_options(tax, "melanoma", options)} <= {"malignant", "malignant_melanoma", "melanoma"}

    @pytest.mark.parametrize("answer, node", [("basal cell carcinoma", "basal_cell_carcinoma"), ("Psoriasis", "psoriasis"),
                                              ("melanocytic nevi", "melanocytic_nevus")])
    def test_resolve_on_shipped_tree(self, answer, node):
        from skinr1.taxonomy import default_resolver

        assert resolve_answer(parse_completion(good(answer)), default_resolver(), "open") == (node, "resolved")
