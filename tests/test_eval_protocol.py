"""`skinr1 eval --protocol paper`: the five question builders, the letter parser, scoring, the report,
and one end-to-end run on the tiny model (slow: it starts a vLLM engine)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from skinr1.data.records import Record, write_jsonl
from skinr1.eval.protocol import (
    TITLES,
    Outcome,
    average_over_datasets,
    checkpoint_results,
    format_protocol_markdown,
    protocol_questions,
    question_overview,
    score_question,
    summarize,
)
from skinr1.eval.protocol_questions import (
    EVALUATIONS,
    ProtocolError,
    build_questions,
    differential_question,
    find_letter,
    hierarchical_question,
    in_domain_question,
    malignancy_question,
    omnimedvqa_question,
    parse_letter,
    question_messages,
)
from skinr1.prompts import DEFAULT_FORMAT
from skinr1.taxonomy import Node, Taxonomy, default_taxonomy
from skinr1.trajectories.ddx import ddx_neighbours
from skinr1.trajectories.knowledge_base import load_knowledge_base

LEAVES = ("melanoma", "basal_cell_carcinoma", "melanocytic_nevus", "seborrheic_keratosis", "psoriasis", "vitiligo",
          "actinic_keratosis")


@pytest.fixture(scope="module")
def taxonomy():
    return default_taxonomy()


@pytest.fixture(scope="module")
def kb(taxonomy):
    return load_knowledge_base(None, taxonomy).differentials()


def record(taxonomy, node_id: str, index: int = 0, **extra) -> Record:
    return Record(f"synthetic:{node_id}-{index}", f"/images/{node_id}-{index}.png", node_id, taxonomy.depth(node_id),
                  "synthetic", node_id, extra=extra)


def omni_record(answer: str = "Melanocytic nevi", options=None) -> Record:
    options = options or {"A": "Dermatofibroma", "B": "Melanocytic nevi", "C": "Melanoma", "D": "Vascular lesions"}
    return Record("omnimedvqa:q1", "/images/q1.jpg", "melanocytic_nevus", 3, "omnimedvqa", answer,
                  extra={"question": "What is the most likely diagnosis?", "options": options, "subset": "HAM10000"})


def records(taxonomy, copies: int = 3) -> list[Record]:
    return [record(taxonomy, leaf, i) for leaf in LEAVES for i in range(copies)]


def assert_well_formed(question, n_options: int) -> None:
    letters = "ABCDEFGH"[:n_options]
    assert question.letters == letters and question.answer in letters
    assert len({o.name.lower() for o in question.options}) == n_options  # no duplicate options
    assert f"{question.answer}. " in question.text


# ------------------------------------------------------------------------------- letter parser
@pytest.mark.parametrize("text, letter", [
    ("B", "B"),
    ("(b)", "B"),
    ("Answer: C. melanoma", "C"),
    ("I think A or B", "A"),
    ("b. melanocytic nevus", "B"),
    ("[d]", "D"),
    ("melanoma", None),
    ("a melanoma on the back", None),  # the article is not an option letter
    ("E is out of range, so C", "C"),  # only the question's own letters count
    ("", None),
])
def test_find_letter_takes_the_first_option_letter(text, letter):
    assert find_letter(text, "ABCD") == letter


def test_parse_letter_reads_the_answer_block_first_then_the_whole_completion():
    in_block = DEFAULT_FORMAT.render("A and B look alike, but", "melanoma", "malignant", letter="C")
    assert parse_letter(in_block, "ABCD").letter == "C" and parse_letter(in_block, "ABCD").reason == "answer_block"
    assert parse_letter("<thinking>hmm</thinking>\n<final diagnosis>melanoma</final diagnosis>", "ABCD").letter is None
    assert parse_letter("Option B, melanocytic nevus.", "ABCD") == parse_letter("Option B", "ABCD")
    assert parse_letter("Option B, melanocytic nevus.", "ABCD").reason == "completion"
    hedged = "<final diagnosis>A</final diagnosis><final diagnosis>B</final diagnosis>"
    assert parse_letter(hedged, "ABCD").letter is None and parse_letter(hedged, "ABCD").reason == "duplicate_answer"
    assert parse_letter("no letter at all here", "ABCD").reason == "no_letter"


# ------------------------------------------------------------------------------- builders
def test_omnimedvqa_records_keep_their_own_question_and_options(taxonomy):
    question = omnimedvqa_question(omni_record(), taxonomy, ["melanoma"], seed=0)
    assert question.stem == "What is the most likely diagnosis?"
    assert [(o.letter, o.name) for o in question.options] == [
        ("A", "Dermatofibroma"), ("B", "Melanocytic nevi"), ("C", "Melanoma"), ("D", "Vascular lesions")]
    assert question.answer == "B"
    two = omnimedvqa_question(omni_record("melanoma", {"A": "Melanoma", "B": "Dermatofibroma"}), taxonomy, [], 0)
    assert two.answer == "A" and two.letters == "AB"
    with pytest.raises(ProtocolError, match="none of its options"):
        omnimedvqa_question(omni_record("Psoriasis"), taxonomy, [], seed=0)
    with pytest.raises(ProtocolError, match="consecutive letters"):
        omnimedvqa_question(omni_record("Melanoma", {"A": "Melanoma", "C": "Nevus"}), taxonomy, [], seed=0)


def test_omnimedvqa_style_options_are_the_truth_and_three_pool_distractors(taxonomy):
    pool = sorted(LEAVES)
    for leaf in LEAVES:
        question = omnimedvqa_question(record(taxonomy, leaf), taxonomy, pool, seed=0)
        assert_well_formed(question, 4)
        nodes = {o.letter: o.node_id for o in question.options}
        assert nodes[question.answer] == leaf
        distractors = [n for letter, n in nodes.items() if letter != question.answer]
        assert set(distractors) <= set(pool)
        assert not any(taxonomy.is_ancestor(d, leaf) or taxonomy.is_ancestor(leaf, d) for d in distractors)
    # A pool too small for three distractors is filled with other diseases of the taxonomy.
    small = omnimedvqa_question(record(taxonomy, "melanoma"), taxonomy, ["melanoma", "psoriasis"], seed=0)
    assert_well_formed(small, 4)
    assert "psoriasis" in {o.node_id for o in small.options}


def test_in_domain_question_is_the_choice_mode_question_answered_by_the_deepest_correct_option(taxonomy):
    from skinr1.prompts.questions import make_question

    class Tokenizer:  # renders the messages as JSON instead of a chat template
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return json.dumps(messages)

    pool = sorted(LEAVES)
    for index, leaf in enumerate(LEAVES):
        rec = record(taxonomy, leaf, index)
        question = in_domain_question(rec, taxonomy, pool, seed=3)
        assert_well_formed(question, 4)
        standard = make_question(Tokenizer(), rec.record_id, rec.image, leaf, "choice", taxonomy, pool, seed=3)
        assert [(o.letter, o.node_id) for o in question.options] == [(o.letter, o.node_id) for o in standard.options]
        assert Tokenizer().apply_chat_template(question_messages(question), True, False) == standard.prompt
        correct = [o for o in question.options if taxonomy.is_ancestor(o.node_id, leaf)]
        right = next(o for o in question.options if o.letter == question.answer)
        assert right in correct and taxonomy.depth(right.node_id) == max(taxonomy.depth(o.node_id) for o in correct)


@pytest.mark.parametrize("node, answer", [("melanoma", "malignant"), ("melanocytic_nevus", "benign"),
                                          ("psoriasis", "benign"), ("actinic_keratosis", "precancerous")])
def test_malignancy_question_has_three_classes_and_reads_non_neoplastic_as_benign(taxonomy, node, answer):
    question = malignancy_question(record(taxonomy, node), taxonomy, seed=0)
    assert_well_formed(question, 3)
    assert {o.name for o in question.options} == {"benign", "precancerous", "malignant"}
    assert next(o.name for o in question.options if o.letter == question.answer) == answer


def test_hierarchical_question_offers_the_path_and_only_the_label_is_right(taxonomy):
    for leaf in LEAVES:
        question = hierarchical_question(record(taxonomy, leaf), taxonomy, seed=0)
        path = taxonomy.path(leaf)
        assert_well_formed(question, len(path))
        assert sorted(o.node_id for o in question.options) == sorted(path)
        right = next(o for o in question.options if o.letter == question.answer)
        assert right.node_id == leaf
        ancestor = next(o for o in question.options if o.node_id == path[0])
        answered = DEFAULT_FORMAT.render("...", ancestor.name, letter=ancestor.letter)
        assert not score_question(question, answered).correct  # true, but not the most specific
        assert score_question(question, DEFAULT_FORMAT.render("...", leaf, letter=question.answer)).correct
    assert hierarchical_question(record(taxonomy, "malignant"), taxonomy, seed=0) is None  # depth 1: no question


def test_differential_question_is_the_truth_against_its_ddx_neighbours(taxonomy, kb):
    for leaf in LEAVES:
        question = differential_question(record(taxonomy, leaf), taxonomy, kb, seed=0)
        neighbours = ddx_neighbours(leaf, taxonomy, kb)[0]
        assert_well_formed(question, 1 + min(3, len(neighbours)))
        nodes = {o.letter: o.node_id for o in question.options}
        assert nodes[question.answer] == leaf
        assert set(nodes.values()) - {leaf} <= set(neighbours)
    lonely = Taxonomy.from_nodes([Node("root", "root", None, "benign", children=("only",)),
                                  Node("only", "only child", "root", "benign")])
    assert differential_question(record(lonely, "only"), lonely, {}, seed=0) is None


def test_builders_are_deterministic_for_a_seed_and_vary_with_it(taxonomy, kb):
    batch = records(taxonomy)
    for evaluation in EVALUATIONS:
        first, _ = build_questions(evaluation, batch, taxonomy, kb, seed=0)
        again, _ = build_questions(evaluation, batch, taxonomy, kb, seed=0)
        other, _ = build_questions(evaluation, batch, taxonomy, kb, seed=1)
        assert first == again
        assert [q.options for q in first] != [q.options for q in other], evaluation


def test_build_questions_counts_skipped_records_and_rejects_unknown_evaluations(taxonomy, kb):
    batch = [record(taxonomy, "melanoma"), record(taxonomy, "malignant"), record(taxonomy, "benign", 1)]
    questions, skipped = build_questions("hierarchical", batch, taxonomy, kb)
    assert [q.record_id for q in questions] == ["synthetic:melanoma-0"] and skipped == 2
    assert build_questions("malignancy", batch, taxonomy, kb)[1] == 0
    with pytest.raises(ValueError, match="unknown evaluation"):
        build_questions("open", batch, taxonomy, kb)


# ------------------------------------------------------------------------------- scoring and report
def test_a_parse_failure_counts_as_wrong(taxonomy):
    question = malignancy_question(record(taxonomy, "melanoma"), taxonomy, seed=0)
    right = score_question(question, f"<final diagnosis>{question.answer}</final diagnosis>")
    failed = score_question(question, "the lesion looks worrying")
    assert right.correct and failed.choice is None and not failed.correct
    summary = summarize([right, failed], skipped=1)
    assert summary["accuracy"] == 0.5 and summary["parse_failures"] == 1 and summary["parse_failure_rate"] == 0.5
    assert summary["n"] == 2 and summary["skipped"] == 1 and summary["per_record"]["correct"] == [1, 0]
    assert 0.0 <= summary["ci"][0] <= 0.5 <= summary["ci"][1] <= 1.0
    assert summarize([])["accuracy"] is None and summarize([])["ci"] is None


def test_the_average_is_the_unweighted_mean_over_datasets():
    a = summarize([Outcome(f"a{i}", "A", "A", "answer_block") for i in range(6)])
    b = summarize([Outcome(f"b{i}", "A", None, "no_letter") for i in range(2)])
    average = average_over_datasets({"a": a, "b": b, "empty": summarize([])})
    assert average["accuracy"] == 0.5 and average["datasets"] == 2  # pooled would be 0.75
    assert average["ci"] == [0.5, 0.5]  # both datasets are certain: every resample averages 1 and 0
    assert average_over_datasets({"empty": summarize([])})["accuracy"] is None


def test_report_tables_have_a_row_per_checkpoint_and_a_column_per_dataset(taxonomy):
    table = protocol_questions({"derm": records(taxonomy, 2), "omni": [omni_record()]}, taxonomy, seed=0)
    right = {e: {d: [f"<final diagnosis>{q.answer}</final diagnosis>" for q in qs] for d, (qs, _) in per.items()}
             for e, per in table.items()}
    silent = {e: {d: ["..."] * len(qs) for d, (qs, _) in per.items()} for e, per in table.items()}
    report = {"evaluations": list(EVALUATIONS), "titles": TITLES, "datasets": ["derm", "omni"],
              "questions": question_overview(table),
              "checkpoints": {"sft": {"path": "/sft", **checkpoint_results(table, right)},
                              "base": {"path": "/base", **checkpoint_results(table, silent)}}}
    for evaluation in EVALUATIONS:
        sft, base = (report["checkpoints"][c]["evaluations"][evaluation] for c in ("sft", "base"))
        assert sft["average"]["accuracy"] == 1.0 and base["average"]["accuracy"] == 0.0
        assert base["datasets"]["derm"]["parse_failures"] == base["datasets"]["derm"]["n"] > 0
    markdown = format_protocol_markdown(report)
    assert markdown.count("| checkpoint | derm (n=") == len(EVALUATIONS)
    assert "| sft | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] | 1.000 [1.00, 1.00] |" in markdown
    n_derm = report["questions"]["omnimedvqa"]["derm"]["n"]
    assert f"| base | 0.000 [0.00, 0.00] pf={n_derm} |" in markdown
    with pytest.raises(ValueError, match="completions for"):
        checkpoint_results(table, {e: {d: [] for d in per} for e, per in table.items()})


def test_cli_refuses_a_question_mode_with_the_paper_protocol(tmp_path, capsys):
    from skinr1.cli import main

    code = main(["eval", "--protocol", "paper", "--mode", "choice", "--checkpoint", "x", "--data", "y",
                 "--out", str(tmp_path)])
    assert code == 2 and "--mode applies to --protocol standard" in capsys.readouterr().err


# ------------------------------------------------------------------------------- end to end (vLLM)
@pytest.fixture(scope="module")
def paper_run(tiny_model_dir, tmp_path_factory):
    """`skinr1 eval --protocol paper` once on the tiny model: two datasets, the model under two names."""
    from skinr1.cli import main

    root = tmp_path_factory.mktemp("protocol")
    taxonomy = default_taxonomy()
    derm = [record(taxonomy, node, i) for i, node in enumerate(("melanoma", "psoriasis", "melanocytic_nevus", "malignant"))]
    omni = [omni_record()]
    for index, rec in enumerate(derm + omni):
        rec.image = str(root / f"image-{index}.png")
        Image.new("RGB", (64, 64), (30 * index, 90, 140)).save(rec.image)
    write_jsonl(root / "derm.jsonl", derm)
    write_jsonl(root / "omni.jsonl", omni)
    out = root / "out"
    code = main(["eval", "--protocol", "paper", "--checkpoint", f"base={tiny_model_dir}",
                 "--checkpoint", f"again={tiny_model_dir}", "--data", str(root / "derm.jsonl"),
                 "--data", str(root / "omni.jsonl"), "--out", str(out), "--max-tokens", "12"])
    assert code == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_paper_protocol_writes_five_tables_with_counts_and_valid_accuracies(paper_run):
    report, markdown = paper_run
    assert report["evaluations"] == list(EVALUATIONS) and report["datasets"] == ["derm", "omni"]
    assert list(report["checkpoints"]) == ["base", "again"]
    expected_n = {"derm": {"hierarchical": 3}, "omni": {}}
    for evaluation in EVALUATIONS:
        assert f"## {EVALUATIONS.index(evaluation) + 1}. {TITLES[evaluation]}" in markdown
        for name, checkpoint in report["checkpoints"].items():
            result = checkpoint["evaluations"][evaluation]
            for dataset, summary in result["datasets"].items():
                n = expected_n[dataset].get(evaluation, 4 if dataset == "derm" else 1)
                assert summary["n"] == n and summary["skipped"] == (4 if dataset == "derm" else 1) - n
                assert 0.0 <= summary["accuracy"] <= 1.0 and 0.0 <= summary["ci"][0] <= summary["ci"][1] <= 1.0
                outcomes = summary["per_record"]
                assert summary["accuracy"] == sum(outcomes["correct"]) / n
                assert summary["parse_failures"] == outcomes["choice"].count(None)
                assert all(not hit for hit, choice in zip(outcomes["correct"], outcomes["choice"]) if choice is None)
            assert 0.0 <= result["average"]["accuracy"] <= 1.0
            assert f"| {name} | " in markdown
    # Greedy decoding: the same model under two names answers identically.
    base, again = (report["checkpoints"][c]["evaluations"] for c in ("base", "again"))
    assert base == again
    # An untrained model with 12 tokens rarely names a letter: parse failures occur, and count as wrong.
    failures = Counter(choice is None for e in base.values() for s in e["datasets"].values()
                       for choice in s["per_record"]["choice"])
    assert failures[True] > 0
