"""Scoring a model on a labelled set: the figures the promotion gate and dashboards use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    roc_auc_score,
)
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


def evaluate(model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]) -> dict:
    """Set metrics on the chosen tags, ranking metrics on the scores.

    The label space is the model's vocabulary plus any tag of the evaluation
    set the model does not know (scored 0), so a new tag counts as missed
    rather than crashing. F1 macro averages over tags present in the truth or
    the predictions; AP and ROC AUC over tags with both classes in the truth.
    """
    labels = sorted(set(model.classes_.tolist()).union(*map(set, tags)))
    binarizer = MultiLabelBinarizer(classes=labels).fit([])
    truth = binarizer.transform(tags)
    chosen = binarizer.transform(model.predict_tag_sets(titles))

    scores = np.zeros(truth.shape, dtype=np.float64)
    columns = np.searchsorted(labels, model.classes_)
    scores[:, columns] = model.predict_scores(titles)

    seen = np.flatnonzero(truth.any(axis=0) | chosen.any(axis=0))
    rankable = np.flatnonzero(truth.any(axis=0) & ~truth.all(axis=0))
    ranked_truth, ranked_scores = truth[:, rankable], scores[:, rankable]
    return {
        "rows": len(titles),
        "accuracy": float(accuracy_score(truth, chosen)),
        "f1_micro": float(f1_score(truth, chosen, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(truth, chosen, average="macro", labels=seen, zero_division=0)),
        "f1_weighted": float(
            f1_score(truth, chosen, average="weighted", labels=seen, zero_division=0)
        ),
        # Undefined (None) when no tag has both classes, e.g. a one-row set.
        "average_precision_macro": float(average_precision_score(ranked_truth, ranked_scores))
        if rankable.size
        else None,
        "roc_auc_macro": float(roc_auc_score(ranked_truth, ranked_scores))
        if rankable.size
        else None,
        "hamming_loss": float(hamming_loss(truth, chosen)),
    }
