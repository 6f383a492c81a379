"""The tag model: TF-IDF word n-grams, one linear SVM per tag, per-tag thresholds.

Training uses scikit-learn. Serving does not go through a hundred per-label
estimator calls: all weights are stacked into one (n_features, n_tags) matrix
and a title is scored with a single sparse-times-dense product. A test proves
the fast path returns the estimator's own decision values.

Scores are calibrated to [0, 1] as sigmoid(slope * (margin - threshold)), so
every tag's decision threshold sits at 0.5 and the score ordering within a tag
is the SVM's (average precision and ROC AUC are unaffected).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from tagloop.domain.text import analyze

_THRESHOLD_GRID = np.linspace(-1.5, 1.0, 101)  # margin steps of 0.025


@dataclass(frozen=True)
class Prediction:
    tags: list[str]
    """The chosen tags, best first; never empty."""
    scores: list[tuple[str, float]]
    """Every tag of the vocabulary with its score, best first."""


def _fit_binary(
    X: sparse.csr_matrix, y: np.ndarray, C: float, random_state: int
) -> LinearSVC | None:
    """One tag's SVM; None for a tag without both classes (it gets a constant margin)."""
    if y.min() == y.max():
        return None
    return LinearSVC(C=C, max_iter=2000, random_state=random_state).fit(X, y)


def _best_f1_threshold(
    margins: np.ndarray, y: np.ndarray, grid: np.ndarray, smoothing: int
) -> float:
    """The grid point where F1 peaks, after a moving average over neighbouring points:
    a raw argmax chases noise in the out-of-fold margins and makes refits jumpy."""

    def at_or_above(values: np.ndarray) -> np.ndarray:
        """How many values reach each grid point (sorting, not a titles x grid matrix)."""
        return values.size - np.searchsorted(np.sort(values), grid, side="left")

    positives = margins[y == 1]
    true_positives = at_or_above(positives)
    f1 = 2 * true_positives / (at_or_above(margins) + positives.size + 1e-12)
    smoothed = np.convolve(
        np.pad(f1, (smoothing // 2, (smoothing - 1) // 2), mode="edge"),
        np.full(smoothing, 1 / smoothing),
        mode="valid",
    )
    return float(grid[int(np.argmax(smoothed))])


class TagModel(BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type hints
    """Multi-label tagger following scikit-learn's estimator conventions.

    C: SVM regularisation. min_df: drop n-grams seen in fewer titles.
    cv_folds: folds of out-of-fold margins used to pick per-tag thresholds.
    threshold_smoothing: grid points (of 0.025 margin) over which the F1 curve is
        averaged before its peak is taken; 1 takes the raw peak.
    threshold_prior: pseudo-titles pulling each tag's threshold toward the global one,
        so a rare tag's few positives cannot set it alone.
    max_tags: at most this many tags are chosen per title.
    """

    def __init__(
        self,
        C: float = 0.3,
        min_df: int = 2,
        cv_folds: int = 3,
        threshold_smoothing: int = 9,
        threshold_prior: float = 20.0,
        max_tags: int = 3,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.min_df = min_df
        self.cv_folds = cv_folds
        self.threshold_smoothing = threshold_smoothing
        self.threshold_prior = threshold_prior
        self.max_tags = max_tags
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- training -----------------------------------------------------------------

    def _fit_svms(
        self, X: sparse.csr_matrix, Y: np.ndarray
    ) -> tuple[list[LinearSVC | None], np.ndarray, np.ndarray]:
        """One SVM per tag, and their weights stacked into (n_features, n_tags)."""
        # liblinear releases the GIL, so threads parallelise without copying X.
        svms = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(_fit_binary)(X, Y[:, j], self.C, self.random_state) for j in range(Y.shape[1])
        )
        coef = np.zeros((X.shape[1], Y.shape[1]))
        intercept = np.where(Y[0] == 1, 1.0, -1.0)  # constant tags: always / never
        for j, svm in enumerate(svms):
            if svm is not None:
                coef[:, j] = svm.coef_.ravel()
                intercept[j] = svm.intercept_[0]
        return svms, coef, intercept

    def fit(self, titles: Sequence[str], tags: Sequence[Sequence[str]]) -> TagModel:
        if len(titles) != len(tags) or not titles:
            raise ValueError("titles and tags must be non-empty and of equal length")
        vectorizer = TfidfVectorizer(
            analyzer=analyze, min_df=self.min_df, sublinear_tf=True, dtype=np.float64
        )
        X = vectorizer.fit_transform(titles).tocsr()
        binarizer = MultiLabelBinarizer()
        Y = binarizer.fit_transform(tags)

        self.estimators_, coef, intercept = self._fit_svms(X, Y)
        oof = np.zeros(Y.shape)
        folds = KFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        for train_rows, held_out in folds.split(X):
            _, w, b = self._fit_svms(X[train_rows], Y[train_rows])
            oof[held_out] = X[held_out] @ w + b
        self.thresholds_ = self._thresholds(oof, Y)
        self.slope_ = self._calibration_slope(oof - self.thresholds_, Y)

        self.classes_ = binarizer.classes_.astype(str)
        self.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
        self.idf_ = vectorizer.idf_.astype(np.float32)
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.n_training_rows_ = len(titles)
        self.vectorizer_ = vectorizer  # with estimators_: the training-time path, not bundled
        return self

    def _thresholds(self, oof: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Per-tag F1-optimal thresholds, shrunk toward the global one by tag frequency."""

        def best(margins: np.ndarray, y: np.ndarray) -> float:
            return _best_f1_threshold(margins, y, _THRESHOLD_GRID, self.threshold_smoothing)

        global_threshold = best(oof.ravel(), Y.ravel())
        own = np.array([best(oof[:, j], Y[:, j]) for j in range(Y.shape[1])])
        positives = Y.sum(axis=0)
        prior = self.threshold_prior
        shrunk: np.ndarray = (positives * own + prior * global_threshold) / (positives + prior)
        return shrunk.astype(np.float32)

    def _calibration_slope(self, centered: np.ndarray, Y: np.ndarray) -> float:
        """Platt scaling with the intercept fixed at the threshold (one shared slope)."""
        rng = np.random.default_rng(self.random_state)
        take = rng.choice(centered.size, size=min(centered.size, 200_000), replace=False)
        z, y = centered.ravel()[take, None], Y.ravel()[take]
        if y.min() == y.max():
            return 4.0
        platt = LogisticRegression(fit_intercept=False, C=100.0).fit(z, y)
        return float(max(platt.coef_[0, 0], 1e-3))

    # -- serving ------------------------------------------------------------------

    def _features(self, title: str) -> tuple[np.ndarray, np.ndarray]:
        """Non-zero TF-IDF columns and weights of one title, as TfidfVectorizer computes them
        (sublinear tf, smoothed idf, l2 norm)."""
        counts = Counter(i for i in map(self.vocabulary_.get, analyze(title)) if i is not None)
        columns = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        weights = np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
        weights += 1.0
        weights *= self.idf_[columns]
        norm = math.sqrt(float(weights @ weights))
        return columns, (weights / norm if norm else weights)

    def decision_function(self, titles: Sequence[str]) -> np.ndarray:
        """SVM margins, shape (n_titles, n_tags): per title one product of its few
        non-zero features with the stacked weight matrix."""
        margins = np.empty((len(titles), len(self.intercept_)), dtype=np.float32)
        for row, title in enumerate(titles):
            columns, weights = self._features(title)
            np.dot(weights, self.coef_[columns], out=margins[row])
        margins += self.intercept_
        return margins

    def predict_scores(self, titles: Sequence[str]) -> np.ndarray:
        """Calibrated scores in [0, 1]; a tag is chosen when its score is >= 0.5."""
        z = self.slope_ * (self.decision_function(titles) - self.thresholds_)
        scores: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
        return scores

    def predict(self, titles: Sequence[str]) -> list[Prediction]:
        return [self._prediction(row) for row in self.predict_scores(titles)]

    def _prediction(self, scores: np.ndarray) -> Prediction:
        order = np.argsort(-scores, kind="stable")
        ranked = list(
            zip(
                self.classes_[order].tolist(),
                scores[order].astype(np.float64).round(4).tolist(),
                strict=True,
            )
        )
        chosen = [tag for tag, score in ranked[: self.max_tags] if score >= 0.5]
        return Prediction(tags=chosen or [ranked[0][0]], scores=ranked)

    def predict_tag_sets(self, titles: Sequence[str]) -> list[list[str]]:
        return [p.tags for p in self.predict(titles)]
