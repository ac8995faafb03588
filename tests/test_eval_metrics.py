"""Evaluation metrics on hand-made predictions."""

from __future__ import annotations

import pytest
from reward_helpers import tiny_resolver

from skinr1.eval.metrics import Prediction, accuracy_by_level, by_skin_type, dataset_metrics, macro_f1, metrics_by_dataset


@pytest.fixture(scope="module")
def tax():
    return tiny_resolver().taxonomy


def p(label, predicted, skin=None, stated=None, dataset="d", fmt=True):
    return Prediction("r", label, predicted, stated, skin, dataset, fmt)


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
    expected = {"n", "accuracy_by_level", "leaf_accuracy", "macro_f1", "malignancy_accuracy", "parse_failure_rate", "by_skin_type"}
    assert expected <= set(report["a"])
