"""Metric computation on hand-checked cases."""

import numpy as np
import pytest

from tagloop.domain.evaluation import METRIC_NAMES, evaluate


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
