"""Scoring a model on a labelled set: the figures the promotion gate and dashboards use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

METRIC_NAMES = (
    "accuracy",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "average_precision_macro",
    "roc_auc_macro",
    "hamming_loss",
)


class Scorer(Protocol):
    classes_: np.ndarray

    def predict_scores(self, titles: Sequence[str]) -> np.ndarray: ...

    def predict_tag_sets(self, titles: Sequence[str]) -> list[list[str]]: ...


def _f1_scores(truth: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
    """Micro, macro and support-weighted F1 over the tags present in truth or predictions."""
    tp = (truth & chosen).sum(axis=0)
    errors = (truth ^ chosen).sum(axis=0)  # false positives + false negatives
    seen = (tp + errors) > 0
    per_tag = np.divide(2 * tp, 2 * tp + errors, out=np.zeros(len(tp)), where=seen)
    support = truth.sum(axis=0)
    total = 2 * tp.sum() + errors.sum()
    return {
        "f1_micro": float(2 * tp.sum() / total) if total else 0.0,
        "f1_macro": float(per_tag[seen].mean()) if seen.any() else 0.0,
        "f1_weighted": float(per_tag @ support / support.sum()) if support.sum() else 0.0,
    }


def evaluate(model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Set metrics on the chosen tags, ranking metrics on the scores.

    The label space is the model's vocabulary plus any tag of the evaluation
    set the model does not know (scored 0), so a new tag counts as missed
    rather than crashing. F1 macro averages over tags present in the truth or
    the predictions; AP and ROC AUC over tags with both classes in the truth.
    """
    labels = sorted(set(model.classes_.tolist()).union(*map(set, tags)))
    binarizer = MultiLabelBinarizer(classes=labels).fit([])
    truth = binarizer.transform(tags).astype(bool)
    chosen = binarizer.transform(model.predict_tag_sets(titles)).astype(bool)

    scores = np.zeros(truth.shape, dtype=np.float64)
    columns = np.searchsorted(labels, model.classes_)
    scores[:, columns] = model.predict_scores(titles)

    rankable = np.flatnonzero(truth.any(axis=0) & ~truth.all(axis=0))
    ranked_truth, ranked_scores = truth[:, rankable], scores[:, rankable]
    return {
        "rows": len(titles),
        "accuracy": float((truth == chosen).all(axis=1).mean()),
        **_f1_scores(truth, chosen),
        # Undefined (None) when no tag has both classes, e.g. a one-row set.
        "average_precision_macro": float(average_precision_score(ranked_truth, ranked_scores))
        if rankable.size
        else None,
        "roc_auc_macro": float(roc_auc_score(ranked_truth, ranked_scores))
        if rankable.size
        else None,
        "hamming_loss": float((truth != chosen).mean()),
    }
