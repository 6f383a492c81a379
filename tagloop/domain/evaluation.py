"""Scoring a model on a labelled set: the figures the promotion gate and dashboards use.

SciPy and scikit-learn are imported where they are used: the learner's own
process reads METRIC_NAMES at start-up and must not pay for them (it never
scores a model itself; its fit worker does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

METRIC_NAMES = (
    "accuracy",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "average_precision_macro",
    "roc_auc_macro",
    "hamming_loss",
)


SHOWN_SCORE = 0.1
"""Scores at or above this are the ones the UI lists with a title; the shown-score
calibration error is measured over them."""
CALIBRATION_BINS = 10


class Scorer(Protocol):
    classes_: np.ndarray

    def predict_scores(self, titles: Sequence[str]) -> np.ndarray: ...

    def predict_tag_sets(self, titles: Sequence[str]) -> list[list[str]]: ...


def _per_tag_f1(truth: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each tag's F1, and which tags occur in truth or predictions at all."""
    tp = (truth & chosen).sum(axis=0)
    errors = (truth ^ chosen).sum(axis=0)  # false positives + false negatives
    seen = (tp + errors) > 0
    return np.divide(2 * tp, 2 * tp + errors, out=np.zeros(len(tp)), where=seen), seen


def _f1_scores(truth: np.ndarray, chosen: np.ndarray) -> dict[str, float]:
    """Micro, macro and support-weighted F1 over the tags present in truth or predictions."""
    tp = (truth & chosen).sum(axis=0)
    errors = (truth ^ chosen).sum(axis=0)
    per_tag, seen = _per_tag_f1(truth, chosen)
    support = truth.sum(axis=0)
    total = 2 * tp.sum() + errors.sum()
    return {
        "f1_micro": float(2 * tp.sum() / total) if total else 0.0,
        "f1_macro": float(per_tag[seen].mean()) if seen.any() else 0.0,
        "f1_weighted": float(per_tag @ support / support.sum()) if support.sum() else 0.0,
    }


def _binarized(
    model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Label space, truth, chosen tags and scores as (titles x labels) matrices."""
    from sklearn.preprocessing import MultiLabelBinarizer

    labels = sorted(set(model.classes_.tolist()).union(*map(set, tags)))
    binarizer = MultiLabelBinarizer(classes=labels).fit([])
    truth = binarizer.transform(tags).astype(bool)
    chosen = binarizer.transform(model.predict_tag_sets(titles)).astype(bool)
    scores = np.zeros(truth.shape, dtype=np.float64)
    scores[:, np.searchsorted(labels, model.classes_)] = model.predict_scores(titles)
    return labels, truth, chosen, scores


def evaluate(model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Set metrics on the chosen tags, ranking metrics on the scores.

    The label space is the model's vocabulary plus any tag of the evaluation
    set the model does not know (scored 0), so a new tag counts as missed
    rather than crashing. F1 macro averages over tags present in the truth or
    the predictions; AP and ROC AUC over tags with both classes in the truth.
    """
    return report(*_binarized(model, titles, tags))[0]


def report(
    labels: list[str], truth: np.ndarray, chosen: np.ndarray, scores: np.ndarray
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The metrics of `evaluate`, plus each tag's F1 and test support (for the gate)."""
    per_tag, _ = _per_tag_f1(truth, chosen)
    support = truth.sum(axis=0)
    tags = {
        label: {"f1": round(float(f1), 4), "support": int(n), "chosen": int(c)}
        for label, f1, n, c in zip(labels, per_tag, support, chosen.sum(axis=0), strict=True)
    }
    return _metrics(truth, chosen, scores), tags


def evaluate_with_tags(
    model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """`evaluate`, plus the per-tag report the promotion gate compares."""
    return report(*_binarized(model, titles, tags))


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's average_precision_score for one tag (ties share a threshold), without
    its per-call validation, which made it most of a candidate's evaluation time."""
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], np.cumsum(truth[order])
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tp = hits[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, tp]) / tp[-1]
    return float(recall_gain @ precision)


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC for one tag as the Mann-Whitney statistic (ties count half), which is what
    scikit-learn's roc_auc_score computes."""
    from scipy.stats import rankdata

    positives = int(truth.sum())
    negatives = truth.size - positives
    rank_sum = float(rankdata(scores)[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _macro(metric: Any, truth: np.ndarray, scores: np.ndarray, columns: np.ndarray) -> float:
    return float(np.mean([metric(truth[:, j], scores[:, j]) for j in columns]))


def _metrics(truth: np.ndarray, chosen: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    rankable = np.flatnonzero(truth.any(axis=0) & ~truth.all(axis=0))
    return {
        "rows": len(truth),
        "accuracy": float((truth == chosen).all(axis=1).mean()),
        **_f1_scores(truth, chosen),
        # Undefined (None) when no tag has both classes, e.g. a one-row set.
        "average_precision_macro": _macro(average_precision, truth, scores, rankable)
        if rankable.size
        else None,
        "roc_auc_macro": _macro(roc_auc, truth, scores, rankable) if rankable.size else None,
        "hamming_loss": float((truth != chosen).mean()),
    }


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Expected calibration error and its table: equal-width bins of the shown score, each
    with its count, mean score and observed share of right answers."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, error = [], 0.0
    for b in range(bins):
        inside = index == b
        if not inside.any():
            continue
        mean_score, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
        error += inside.sum() / confidence.size * abs(mean_score - accuracy)
        table.append(
            {
                "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                "count": int(inside.sum()),
                "mean_score": round(mean_score, 4),
                "share_right": round(accuracy, 4),
            }
        )
    return {"ece": round(float(error), 4), "n": int(confidence.size), "table": table}


def calibration(
    model: Scorer, titles: Sequence[str], tags: Sequence[Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """How honest the scores are: the top tag of each title, and every shown score."""
    _, truth, _, scores = _binarized(model, titles, tags)
    top = np.argmax(scores, axis=1)
    rows = np.arange(len(truth))
    shown = scores >= SHOWN_SCORE
    return {
        "top_tag": reliability(scores[rows, top], truth[rows, top]),
        "shown_scores": reliability(scores[shown], truth[shown]),
    }


def new_tag_report(
    model: Scorer,
    titles: Sequence[str],
    tags: Sequence[Sequence[str]],
    new_tags: Iterable[str],
    test_tags: Mapping[str, Mapping[str, int | float]],
) -> dict[str, dict[str, float | int]]:
    """F1 of tags the test set cannot contain, on the held-out corrections carrying them.

    Hits and misses come from the held-out titles; false alarms from those
    titles and from the test set, where every choice of such a tag is wrong
    (its test support is 0), so a new tag that fires everywhere scores low.
    """
    chosen = model.predict_tag_sets(titles) if titles else []
    result = {}
    for tag in sorted(new_tags):
        truth = [tag in row for row in tags]
        picked = [tag in row for row in chosen]
        tp = sum(t and p for t, p in zip(truth, picked, strict=True))
        fn = sum(truth) - tp
        fp = sum(picked) - tp + int(test_tags.get(tag, {}).get("chosen", 0))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        result[tag] = {"f1": round(f1, 4), "held_out": sum(truth)}
    return result
