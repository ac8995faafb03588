"""Evaluation metrics, their intervals and the report files, on hand-made predictions."""

from __future__ import annotations

import json
import re

import pytest
from reward_helpers import tiny_resolver

from skinr1.eval.metrics import (
    Prediction,
    accuracy_by_level,
    by_skin_type,
    dataset_metrics,
    macro_f1,
    metrics_by_dataset,
    record_outcomes,
)
from skinr1.eval.report import COMPARISONS_TITLE, compare_checkpoints, format_table, pooled_accuracies, write_report


@pytest.fixture(scope="module")
def tax():
    return tiny_resolver().taxonomy


def p(label, predicted, skin=None, stated=None, dataset="d", fmt=True, record_id="r"):
    return Prediction(record_id, label, predicted, stated, skin, dataset, fmt)


def test_levels_give_partial_credit_along_the_path(tax):
    predictions = [
        p("melanoma", "melanoma"),                 # right at every level
        p("melanoma", "malignant_melanoma"),      # right group, no disease
        p("melanoma", "basal_cell_carcinoma"),    # right category only
        p("melanoma", "psoriasis"),               # wrong category
        p("melanoma", None),                      # parse failure: wrong everywhere
    ]
    assert accuracy_by_level(tax, predictions) == {"1": 3 / 5, "2": 2 / 5, "3": 1 / 5}


def test_coarse_labels_count_only_their_levels(tax):
    predictions = [p("malignant_epidermal", "squamous_cell_carcinoma"), p("melanoma", "melanoma")]
    assert accuracy_by_level(tax, predictions) == {"1": 1.0, "2": 1.0, "3": 1.0}  # level 3: only melanoma counts
    metrics = dataset_metrics(tax, predictions)
    assert metrics["leaf_accuracy"] == 1.0  # a subtype of a coarse label is correct


def test_subtype_prediction_is_correct_for_its_parent_label(tax):
    assert dataset_metrics(tax, [p("melanoma", "nodular_melanoma")])["leaf_accuracy"] == 1.0
    assert dataset_metrics(tax, [p("nodular_melanoma", "melanoma")])["leaf_accuracy"] == 0.0


def test_macro_f1(tax):
    predictions = [
        p("melanoma", "melanoma"), p("melanoma", "melanocytic_nevus"),
        p("melanocytic_nevus", "melanocytic_nevus"), p("melanocytic_nevus", None),
    ]
    # melanoma: P=1, R=1/2 -> F1=2/3; nevus: P=1/2, R=1/2 -> F1=1/2
    assert macro_f1(tax, predictions) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert macro_f1(tax, []) == 0.0


def test_malignancy_uses_stated_class_then_predicted_node(tax):
    predictions = [
        p("melanoma", "melanocytic_nevus", stated="malignant"),  # stated class wins: right
        p("melanoma", "basal_cell_carcinoma"),                    # node class malignant: right
        p("melanoma", "psoriasis"),                               # node class non-neoplastic: wrong
        p("melanoma", None),                                      # nothing: wrong
    ]
    assert dataset_metrics(tax, predictions)["malignancy_accuracy"] == 0.5


def test_skin_types_with_one_sample_and_unknown_types(tax):
    predictions = [
        p("melanoma", "melanoma", skin=1), p("melanoma", None, skin=1),
        p("psoriasis", "psoriasis", skin=6),
        p("psoriasis", "eczema", skin=None),
    ]
    table, gap = by_skin_type(tax, predictions)
    assert table == {"1": {"n": 2, "leaf_accuracy": 0.5}, "6": {"n": 1, "leaf_accuracy": 1.0}}
    assert gap == 0.5
    assert by_skin_type(tax, predictions[2:3]) == ({"6": {"n": 1, "leaf_accuracy": 1.0}}, None)


def test_parse_failures_and_format_errors(tax):
    metrics = dataset_metrics(tax, [p("melanoma", None, fmt=False), p("melanoma", "melanoma", fmt=False), p("vitiligo", "vitiligo")])
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 3)
    assert metrics["format_error_rate"] == pytest.approx(2 / 3)
    assert metrics["n"] == 3


def test_report_shape_per_dataset(tax):
    report = metrics_by_dataset(tax, [p("melanoma", "melanoma", dataset="a"), p("vitiligo", None, dataset="b")])
    assert set(report) == {"a", "b"}
    expected = {"n", "accuracy_by_level", "leaf_accuracy", "macro_f1", "malignancy_accuracy", "parse_failure_rate",
                "by_skin_type", "ci", "per_record"}
    assert expected <= set(report["a"])


def test_per_record_outcomes_are_columns_aligned_with_the_predictions(tax):
    predictions = [
        p("melanoma", "malignant_melanoma", skin=2, record_id="a"),   # right at levels 1-2 only
        p("malignant_epidermal", "basal_cell_carcinoma", record_id="b"),  # coarse label: no level 3
        p("psoriasis", None, skin=5, stated="non-neoplastic", record_id="c"),
    ]
    assert record_outcomes(tax, predictions) == {
        "record_id": ["a", "b", "c"],
        "label": ["melanoma", "malignant_epidermal", "psoriasis"],
        "predicted": ["malignant_melanoma", "basal_cell_carcinoma", None],
        "leaf": [0, 1, 0],
        "malignancy": [1, 1, 1],
        "levels": {"1": [1, 1, 0], "2": [1, 1, 0], "3": [0, None, 0]},
        "skin_type": [2, None, 5],
    }


def test_every_accuracy_carries_an_interval_around_it(tax):
    predictions = [
        p("melanoma", "melanoma", skin=1), p("melanoma", "psoriasis", skin=1), p("melanoma", None, skin=1),
        p("psoriasis", "psoriasis", skin=6), p("psoriasis", "psoriasis", skin=6),
        p("malignant_epidermal", "vitiligo"),  # wrong, but has no level 3
    ] * 10
    m = dataset_metrics(tax, predictions)
    ci = m["ci"]
    assert set(ci["accuracy_by_level"]) == set(m["accuracy_by_level"]) == {"1", "2", "3"}
    assert set(ci["by_skin_type"]) == set(m["by_skin_type"]) == {"1", "6"}
    pairs = [(m["leaf_accuracy"], ci["leaf_accuracy"]), (m["malignancy_accuracy"], ci["malignancy_accuracy"])]
    pairs += [(m["accuracy_by_level"][k], ci["accuracy_by_level"][k]) for k in m["accuracy_by_level"]]
    pairs += [(row["leaf_accuracy"], ci["by_skin_type"][k]) for k, row in m["by_skin_type"].items()]
    for accuracy, (low, high) in pairs:
        assert low <= accuracy <= high
    assert 0 < ci["leaf_accuracy"][0] < m["leaf_accuracy"] < ci["leaf_accuracy"][1] < 1
    assert ci["by_skin_type"]["6"] == [1.0, 1.0]
    # level 3 counts only the 3-level labels (as accuracy_by_level does): 30 melanoma and 20 psoriasis records
    assert m["accuracy_by_level"]["3"] == pytest.approx(30 / 50)
    low, high = ci["accuracy_by_level"]["3"]
    # counting the coarse records as wrong at level 3 would centre the interval on 0.5
    assert (low + high) / 2 == pytest.approx(0.6, abs=0.03)


def _checkpoint(tax, predictions):
    return {"path": "/checkpoints/x", "datasets": metrics_by_dataset(tax, predictions)}


def _answers(correct, skin=None, dataset="d"):
    """200 records alternating melanoma and psoriasis labels; the first `correct` answered right."""
    labels = ["melanoma", "psoriasis"] * 100
    wrong = {"melanoma": "psoriasis", "psoriasis": "melanoma"}
    return [
        p(label, label if i < correct else wrong[label], skin=skin, dataset=dataset, record_id=f"{dataset}-{i}")
        for i, label in enumerate(labels)
    ]


@pytest.fixture(scope="module")
def three_checkpoints(tax):
    """base right on 100 of 200; sft also on 40 more (records listed in reverse order); rl answers as sft."""
    return {
        "mode": "open",
        "checkpoints": {
            "base": _checkpoint(tax, _answers(100, skin=2) + _answers(100, dataset="e")),
            "sft": _checkpoint(tax, _answers(140, skin=2)[::-1]),
            "rl": _checkpoint(tax, _answers(140, skin=2)),
        },
    }


def test_comparisons_pair_consecutive_checkpoints_by_record(three_checkpoints):
    report = json.loads(json.dumps(three_checkpoints))  # a copy: compare_checkpoints stores into the report
    comparisons = compare_checkpoints(report)
    assert report["comparisons"] is comparisons
    # dataset "e" only base evaluated: not compared
    assert [(c["from"], c["to"], c["dataset"], c["metric"]) for c in comparisons] == [
        (a, b, "d", metric)
        for a, b in (("base", "sft"), ("sft", "rl"))
        for metric in ("L1", "L2", "L3", "leaf", "malignancy")
    ]
    gain = {c["metric"]: c for c in comparisons if c["to"] == "sft"}
    assert gain["leaf"]["n"] == 200
    assert gain["leaf"]["difference"] == pytest.approx(0.2)
    assert 0 < gain["leaf"]["low"] < 0.2 < gain["leaf"]["high"]
    # sft and rl give the same answer per record in a different order: matched by id, they never differ
    for c in comparisons:
        if c["to"] == "rl":
            assert (c["difference"], c["low"], c["high"]) == (0.0, 0.0, 0.0)


def test_comparisons_follow_the_requested_pairs(three_checkpoints):
    report = json.loads(json.dumps(three_checkpoints))
    comparisons = compare_checkpoints(report, pairs=[("base", "rl")])
    assert {(c["from"], c["to"]) for c in comparisons} == {("base", "rl")}
    assert {c["metric"]: c["difference"] for c in comparisons}["leaf"] == pytest.approx(0.2)


def test_pooled_figure_intervals_come_from_the_pooled_records(tax):
    predictions = [p("melanoma", "melanoma", skin=3, dataset="a", record_id=str(i)) for i in range(50)]
    predictions += [p("psoriasis", "eczema", skin=3, dataset="b", record_id=str(i)) for i in range(50)]
    predictions.append(p("malignant_epidermal", "psoriasis", dataset="b", record_id="coarse"))
    datasets = metrics_by_dataset(tax, predictions)
    assert datasets["a"]["ci"]["leaf_accuracy"] == [1.0, 1.0] and datasets["b"]["ci"]["leaf_accuracy"] == [0.0, 0.0]
    levels, skin_types = pooled_accuracies(datasets)
    accuracy, low, high = skin_types["3"]
    assert accuracy == 0.5 and low < 0.45 and high > 0.55  # averaging the two [x, x] intervals would give [0.5, 0.5]
    assert levels["1"][0] == pytest.approx(100 / 101)  # eczema for psoriasis is right at levels 1-2
    assert levels["3"][0] == pytest.approx(50 / 100)  # the coarse record has no level 3
    assert levels["3"][1] < 0.5 < levels["3"][2]


def test_write_report_shows_intervals_paired_table_and_figure(three_checkpoints, tmp_path):
    report = json.loads(json.dumps(three_checkpoints))
    paths = write_report(report, tmp_path)
    markdown = paths["markdown"].read_text()
    assert f"## {COMPARISONS_TITLE}" in markdown
    assert re.search(r"\| base \| d \| 200 \| 0\.500 \[0\.4\d, 0\.5\d\] \|", format_table(report))  # base's L1
    gain = r"\| d \| base \| sft \| leaf \| 200 \| \+0\.200 \| \[\+0\.1\d\d, \+0\.2\d\d\] \| yes \|"
    assert re.search(gain, markdown)
    assert re.search(r"\| d \| sft \| rl \| leaf \| 200 \| \+0\.000 \| \[\+0\.000, \+0\.000\] \| no \|", markdown)
    assert re.search(r"type 2: 0\.700 \[0\.\d\d, 0\.\d\d\] \(n=200\)", markdown)
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(paths["json"].read_text())
    assert written["comparisons"] == report["comparisons"] and len(written["comparisons"]) == 10
    assert written["checkpoints"]["sft"]["datasets"]["d"]["ci"]["leaf_accuracy"][0] > 0.6


def test_reports_without_intervals_still_render(three_checkpoints):
    """A report.json written before intervals existed (reused by the pipeline) still gives a table."""
    report = json.loads(json.dumps(three_checkpoints))
    for checkpoint in report["checkpoints"].values():
        for m in checkpoint["datasets"].values():
            del m["ci"], m["per_record"]
    table = format_table(report)
    assert "0.500 |" in table and "[" not in table
    assert compare_checkpoints(report) == []


def test_report_json_keeps_outcome_columns_on_one_line():
    import json

    from skinr1.eval.report import dumps_readable

    report = {"checkpoints": {"rl": {"per_record": {"leaf": [0, 1, None], "record_id": ["a", "b", "c"]}, "ci": [0.1, 0.9]}},
              "comparisons": [{"from": "sft", "to": "rl"}], "empty": {}, "none": []}
    text = dumps_readable(report)
    assert json.loads(text) == report
    assert '"leaf": [0, 1, null]' in text and '"record_id": ["a", "b", "c"]' in text
    assert '\n  "comparisons": [\n    {\n' in text  # nested structures stay indented
