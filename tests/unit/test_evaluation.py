"""Metric computation on hand-checked cases."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from tagloop.domain.evaluation import (
    METRIC_NAMES,
    average_precision,
    calibration,
    evaluate,
    evaluate_with_tags,
    new_tag_report,
    reliability,
    roc_auc,
)


class FixedModel:
    """A stand-in scorer with fixed scores per title, to check the arithmetic."""

    def __init__(self, classes, scores_by_title):
        self.classes_ = np.array(classes)
        self.scores_by_title = scores_by_title

    def predict_scores(self, titles):
        return np.array([self.scores_by_title[t] for t in titles], dtype=float)

    def predict_tag_sets(self, titles):
        return [
            [c for c, s in zip(self.classes_, self.scores_by_title[t], strict=True) if s >= 0.5]
            for t in titles
        ]


def test_metrics_on_a_small_hand_checked_case():
    model = FixedModel(
        ["java", "python"],
        {"a": [0.9, 0.1], "b": [0.2, 0.8], "c": [0.7, 0.6], "d": [0.1, 0.4]},
    )
    truth = [["java"], ["python"], ["java"], ["python"]]
    report = evaluate(model, ["a", "b", "c", "d"], truth)
    assert set(METRIC_NAMES) <= set(report)
    assert report["rows"] == 4
    assert report["accuracy"] == pytest.approx(0.5)  # a and b exact
    # java: tp=2 fp=0 fn=0 -> f1 1; python: tp=1 fp=1 fn=1 -> f1 0.5
    assert report["f1_macro"] == pytest.approx(0.75)
    assert report["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert report["hamming_loss"] == pytest.approx(2 / 8)
    assert report["roc_auc_macro"] == pytest.approx((1.0 + 0.75) / 2)


def test_tags_unknown_to_the_model_count_as_missed_not_crash():
    model = FixedModel(["java", "python"], {"a": [0.9, 0.1], "b": [0.2, 0.8]})
    report = evaluate(model, ["a", "b"], [["java", "kotlin"], ["python"]])
    assert report["f1_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert report["roc_auc_macro"] is not None


def test_ranking_metrics_are_none_when_no_tag_has_both_classes():
    model = FixedModel(["java"], {"a": [0.9]})
    report = evaluate(model, ["a"], [["java"]])
    assert report["average_precision_macro"] is None
    assert report["roc_auc_macro"] is None
    assert report["f1_macro"] == pytest.approx(1.0)


def test_per_tag_report_gives_each_tags_f1_support_and_choices():
    model = FixedModel(
        ["java", "python"],
        {"a": [0.9, 0.1], "b": [0.2, 0.8], "c": [0.7, 0.6], "d": [0.1, 0.4]},
    )
    truth = [["java"], ["python"], ["java"], ["python"]]
    metrics, tags = evaluate_with_tags(model, ["a", "b", "c", "d"], truth)
    assert metrics == evaluate(model, ["a", "b", "c", "d"], truth)
    assert tags == {
        "java": {"f1": 1.0, "support": 2, "chosen": 2},
        "python": {"f1": 0.5, "support": 2, "chosen": 2},
    }


def test_reliability_bins_scores_and_weighs_each_bins_gap_by_its_share():
    confidence = np.array([0.15, 0.15, 0.15, 0.15, 0.95, 0.95])
    correct = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    report = reliability(confidence, correct)
    assert [b["bin"] for b in report["table"]] == ["0.1-0.2", "0.9-1.0"]
    assert report["table"][0]["share_right"] == 0.25
    # (4/6) * |0.15 - 0.25| + (2/6) * |0.95 - 1.0|
    assert report["ece"] == pytest.approx(4 / 6 * 0.1 + 2 / 6 * 0.05, abs=1e-4)
    assert reliability(np.array([1.0]), np.array([True]))["table"][0]["bin"] == "0.9-1.0"


def test_calibration_measures_the_top_tag_and_every_shown_score():
    model = FixedModel(["java", "python"], {"a": [0.9, 0.05], "b": [0.3, 0.6]})
    report = calibration(model, ["a", "b"], [["java"], ["java"]])
    assert report["top_tag"]["n"] == 2  # java for a (right), python for b (wrong)
    assert report["top_tag"]["ece"] == pytest.approx((0.1 + 0.6) / 2)
    assert report["shown_scores"]["n"] == 3  # 0.05 is not shown


def test_a_new_tag_is_judged_on_its_slice_with_test_set_choices_as_false_alarms():
    model = FixedModel(["rust", "java"], {"s1": [0.9, 0.1], "s2": [0.2, 0.1], "s3": [0.8, 0.1]})
    test_tags = {"rust": {"f1": 0.0, "support": 0, "chosen": 2}}
    report = new_tag_report(
        model, ["s1", "s2", "s3"], [["rust"], ["rust"], ["java"]], ["rust"], test_tags
    )
    # tp 1 (s1), fn 1 (s2), fp 1 (s3) + 2 on the test set -> 2 / (2 + 3 + 1)
    assert report == {"rust": {"f1": round(2 / 6, 4), "held_out": 2}}
    assert new_tag_report(model, [], [], ["rust"], {}) == {"rust": {"f1": 0.0, "held_out": 0}}


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.booleans(), min_size=2, max_size=60),
    levels=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_ranking_metrics_equal_scikit_learns(labels, levels, seed):
    """Ours are a faster route to the same figures, ties included."""
    truth = np.array(labels)
    assume(truth.any() and not truth.all())
    scores = np.random.default_rng(seed).integers(0, levels, size=truth.size) / levels
    assert average_precision(truth, scores) == pytest.approx(
        average_precision_score(truth, scores), abs=1e-12
    )
    assert roc_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
