"""The tag model: TF-IDF word and character n-grams, one linear SVM per tag,
per-tag thresholds, calibrated scores.

Training uses scikit-learn. Serving does not go through a hundred per-label
estimator calls: all weights are stacked into one (n_features, n_tags) matrix
and a title is scored with a single sparse-times-dense product. A test proves
the fast path returns the estimator's own decision values.

A tag is chosen when its margin reaches its threshold. The score shown with it
is a calibrated probability: one increasing map, fitted by isotonic regression
on out-of-fold margins (minus each tag's threshold) of all tags pooled, gives
the share of such (title, tag) pairs that were right. Within a tag the ranking
is the SVM's.
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from tagloop.domain.text import (
    analyze,
    char_grams,
    grams_of,
    normalize_title,
    with_bigrams,
    words_of,
)

if TYPE_CHECKING:  # training only: imported where it fits (see TagModel)
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion
    from sklearn.svm import LinearSVC

_THRESHOLD_GRID = np.linspace(-1.5, 1.0, 101)  # margin steps of 0.025
CHAR_MARK = "c:"
"""Prefix of character n-gram terms in the vocabulary: word terms never contain ":"."""
_CALIBRATION_POINTS = 400_000


@dataclass(frozen=True)
class Prediction:
    tags: list[str]
    """The chosen tags, best first; never empty."""
    scores: list[tuple[str, float]]
    """Every tag of the vocabulary with its score, best first; with `predict(...,
    alternatives=n)` only the chosen tags and the n best others, as a prefix of that list."""
    words: list[str]
    """The title's words as the model's tokenizer read them (`tagloop.domain.text.tokenize`),
    so that what else counts them (drift monitoring) need not tokenise again."""


def _fit_binary(
    X: sparse.csr_matrix, y: np.ndarray, C: float, random_state: int
) -> LinearSVC | None:
    """One tag's SVM; None for a tag without both classes (it gets a constant margin)."""
    from sklearn.svm import LinearSVC

    if y.min() == y.max():
        return None
    return LinearSVC(C=C, max_iter=2000, random_state=random_state).fit(X, y)


def _stacked_weights(
    svms: Sequence[LinearSVC | None], n_features: int, Y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The per-tag SVMs' weights as one (n_features, n_tags) matrix, and their intercepts;
    a tag without an SVM gets zero weights and a constant margin (always / never)."""
    coef = np.zeros((n_features, Y.shape[1]))
    intercept = np.where(Y[0] == 1, 1.0, -1.0)
    for j, svm in enumerate(svms):
        if svm is not None:
            coef[:, j] = svm.coef_.ravel()
            intercept[j] = svm.intercept_[0]
    return coef, intercept


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


def _isotonic_knots(centered: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An increasing map from centred margin to the share of positives, as interpolation knots.

    Isotonic regression gives a step function; a knot at the middle of each step,
    joined linearly, keeps its calibration while making the map strictly
    increasing between the outermost knots (so close margins get distinct
    scores instead of ties).
    """
    from sklearn.isotonic import IsotonicRegression

    if y.min() == y.max():
        return np.array([0.0]), np.array([float(y[0])])
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(centered, y)
    xs, ys = isotonic.X_thresholds_, isotonic.y_thresholds_
    steps = np.r_[0, np.flatnonzero(np.diff(ys)) + 1, ys.size]
    knots_x = np.array([xs[a:b].mean() for a, b in itertools.pairwise(steps)])
    knots_y = ys[steps[:-1]]
    return knots_x.astype(np.float64), knots_y.astype(np.float64)


def _sublinear_tf(size: int) -> list[float]:
    """`1 + log(count)` for counts 1..size-1 (index = count; 0 is unused), each the float32
    value numpy's float32 `log` and `+= 1.0` give, as TfidfVectorizer's sublinear tf."""
    with np.errstate(divide="ignore"):  # log(0), the unused slot
        table = np.log(np.arange(size, dtype=np.float32))
    table += 1.0
    values: list[float] = table.tolist()
    values[0] = 0.0
    return values


class _ServingLists:
    """A model's arrays as Python objects for serving one title with few numpy calls
    (TagModel._features, TagModel._prediction): tag names and calibration map, idf,
    sublinear tf by count, and the character terms without their `CHAR_MARK`."""

    def __init__(self, model: TagModel) -> None:
        classes, calibration, vocabulary, idf = self._source = model._serving_arrays()
        knots_x, knots_y = calibration
        self.classes: list[str] = classes.tolist()
        self.knots_x: list[float] = knots_x.astype(np.float64).tolist()
        self.knots_y: list[float] = knots_y.astype(np.float64).tolist()
        self.idf: list[float] = idf.tolist()
        self.sublinear_tf = _sublinear_tf(1024)  # grown by `sublinear` if ever needed
        self.char_vocabulary = {
            term[len(CHAR_MARK) :]: column
            for term, column in vocabulary.items()
            if term.startswith(CHAR_MARK)
        }

    def made_from(self, model: TagModel) -> bool:
        """Whether the model's arrays are those the lists were built from (not copies or new
        ones: a fit, a bundle load)."""
        classes, calibration, vocabulary, idf = self._source
        return (
            model.classes_ is classes
            and model.calibration_ is calibration
            and model.vocabulary_ is vocabulary
            and model.idf_ is idf
        )

    def sublinear(self, terms: int) -> list[float]:
        """The sublinear tf table, grown first if it does not cover a count of `terms` (no
        term occurs more often than a block has terms)."""
        if terms >= len(self.sublinear_tf):
            self.sublinear_tf = _sublinear_tf(2 * terms)
        return self.sublinear_tf

    def calibrate(self, centered: float) -> float:
        """`np.interp(centered, knots_x, knots_y)`, bit for bit: the same cases and the same
        float64 operations as numpy's C loop (tests/unit/test_model.py compares them)."""
        xs, ys = self.knots_x, self.knots_y
        j = bisect.bisect_right(xs, centered) - 1
        if j < 0:
            return ys[0]
        if j == len(xs) - 1 or xs[j] == centered:
            return ys[j]
        slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
        return slope * (centered - xs[j]) + ys[j]


def normalise_blocks(weights: np.ndarray, sizes: Iterable[int]) -> None:
    """Scale each consecutive block of `weights` (one per feature block) to unit length, in
    place, as scikit-learn's l2 normalisation does per vectoriser."""
    start = 0
    for size in sizes:
        part = weights[start : start + size]
        norm = math.sqrt(float(part @ part))
        if norm:
            part /= norm
        start += size


class TagModel:
    """Multi-label tagger following scikit-learn's estimator conventions.

    Not a subclass of scikit-learn's BaseEstimator, and scikit-learn is imported
    only by the training methods: a replica (or the learner's own process) that
    loads a bundle and scores titles needs NumPy alone, and importing
    scikit-learn (which brings SciPy's statistics and pandas) cost every replica
    about 2 CPU-seconds of start-up.

    C: SVM regularisation. min_df: drop n-grams seen in fewer titles.
    char_ngram: length of the character n-grams added to the word features (0: words only).
    cv_folds: folds of out-of-fold margins used to pick thresholds and calibrate scores.
    calibration_rows: the out-of-fold fits use at most this many rows (a random sample
        above it), so the cost of thresholds and calibration stops growing with the corpus.
    threshold_smoothing: grid points (of 0.025 margin) over which the F1 curve is
        averaged before its peak is taken; 1 takes the raw peak.
    threshold_prior: pseudo-titles pulling each tag's threshold toward the global one,
        so a rare tag's few positives cannot set it alone.
    max_tags: at most this many tags are chosen per title.
    n_jobs: threads fitting the per-tag SVMs (the learner passes TAGLOOP_FIT_JOBS).
    """

    def __init__(
        self,
        C: float = 0.1,
        min_df: int = 2,
        char_ngram: int = 4,
        cv_folds: int = 2,
        calibration_rows: int = 20_000,
        threshold_smoothing: int = 9,
        threshold_prior: float = 20.0,
        max_tags: int = 3,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.min_df = min_df
        self.char_ngram = char_ngram
        self.cv_folds = cv_folds
        self.calibration_rows = calibration_rows
        self.threshold_smoothing = threshold_smoothing
        self.threshold_prior = threshold_prior
        self.max_tags = max_tags
        self.n_jobs = n_jobs
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments by name, as scikit-learn's `get_params` gives them."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    # -- training -----------------------------------------------------------------

    def _fit_svm_sets(
        self, sets: Sequence[tuple[sparse.csr_matrix, np.ndarray]]
    ) -> list[tuple[list[LinearSVC | None], np.ndarray, np.ndarray]]:
        """For each (X, Y): one SVM per tag, and their weights stacked into (n_features, n_tags).

        Every (set, tag) fit goes into one thread pool of `n_jobs` threads, so the final fit
        and the out-of-fold fits share the cores without a pause between them (liblinear
        releases the GIL, so threads parallelise without copying X). liblinear draws from one
        process-wide random generator, so with more than one thread the fits' draws interleave
        and weights differ in the last digits from run to run (F1 does not move); `n_jobs=1`
        fits are bit-for-bit reproducible.
        """
        from joblib import Parallel, delayed

        tasks = [(X, Y[:, j]) for X, Y in sets for j in range(Y.shape[1])]
        svms: list[LinearSVC | None] = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(_fit_binary)(X, y, self.C, self.random_state) for X, y in tasks
        )
        stacked = []
        for X, Y in sets:
            mine, svms = svms[: Y.shape[1]], svms[Y.shape[1] :]
            stacked.append((mine, *_stacked_weights(mine, X.shape[1], Y)))
        return stacked

    def _vectorizer(self) -> FeatureUnion:
        """Word TF-IDF, then (optionally) character n-gram TF-IDF, each l2-normalised."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        def tfidf(analyzer: Callable[[str], list[str]]) -> TfidfVectorizer:
            return TfidfVectorizer(
                analyzer=analyzer, min_df=self.min_df, sublinear_tf=True, dtype=np.float64
            )

        parts = [("words", tfidf(analyze))]
        if self.char_ngram:
            parts.append(("chars", tfidf(partial(char_grams, n=self.char_ngram))))
        return FeatureUnion(parts)

    def _calibration_folds(
        self, X: sparse.csr_matrix, Y: np.ndarray
    ) -> tuple[sparse.csr_matrix, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """At most `calibration_rows` rows (and labels), and their (train, held-out) folds,
        for the out-of-fold margins."""
        from sklearn.model_selection import KFold

        rng = np.random.default_rng(self.random_state)
        rows = np.arange(X.shape[0])
        if rows.size > self.calibration_rows:
            rows = np.sort(rng.choice(rows.size, size=self.calibration_rows, replace=False))
        X, Y = X[rows], Y[rows]
        folds = KFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        return X, Y, list(folds.split(X))

    def fit(self, titles: Sequence[str], tags: Sequence[Sequence[str]]) -> TagModel:
        if len(titles) != len(tags) or not titles:
            raise ValueError("titles and tags must be non-empty and of equal length")
        from sklearn.preprocessing import MultiLabelBinarizer

        vectorizer = self._vectorizer()
        X = vectorizer.fit_transform(titles).tocsr()
        binarizer = MultiLabelBinarizer()
        Y = binarizer.fit_transform(tags)

        oof_X, oof_Y, folds = self._calibration_folds(X, Y)
        (self.estimators_, coef, intercept), *fold_fits = self._fit_svm_sets(
            [(X, Y), *((oof_X[train], oof_Y[train]) for train, _ in folds)]
        )
        oof = np.zeros(oof_Y.shape)
        for (_, held_out), (_, w, b) in zip(folds, fold_fits, strict=True):
            oof[held_out] = oof_X[held_out] @ w + b
        self.thresholds_ = self._thresholds(oof, oof_Y)
        self.calibration_ = self._calibration(oof - self.thresholds_, oof_Y)

        self.classes_ = binarizer.classes_.astype(str)
        self.vocabulary_ = self._stacked_vocabulary(vectorizer)
        self.idf_ = np.concatenate([part.idf_ for _, part in vectorizer.transformer_list]).astype(
            np.float32
        )
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.n_training_rows_ = len(titles)
        self.vectorizer_ = vectorizer  # with estimators_: the training-time path, not bundled
        return self

    @staticmethod
    def _stacked_vocabulary(vectorizer: FeatureUnion) -> dict[str, int]:
        """One term -> column map over the stacked blocks; character terms carry CHAR_MARK."""
        vocabulary: dict[str, int] = {}
        offset = 0
        for name, part in vectorizer.transformer_list:
            mark = CHAR_MARK if name == "chars" else ""
            vocabulary.update(
                {mark + term: offset + int(i) for term, i in part.vocabulary_.items()}
            )
            offset += len(part.vocabulary_)
        return vocabulary

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

    def _calibration(self, centered: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Isotonic calibration knots of all tags' centred out-of-fold margins, pooled."""
        rng = np.random.default_rng(self.random_state)
        take = rng.choice(
            centered.size, size=min(centered.size, _CALIBRATION_POINTS), replace=False
        )
        return _isotonic_knots(centered.ravel()[take], Y.ravel()[take])

    # -- serving ------------------------------------------------------------------

    def _features(
        self, title: str, lists: _ServingLists
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Non-zero feature columns and weights of one title (words, then characters), as
        the TfidfVectorizer blocks compute them (sublinear tf, smoothed idf, each block
        l2-normalised), and the title's words. The title is normalised once and both
        blocks are weighted in one pass: per request, each numpy call costs more than the
        arithmetic it does. So `tf * idf` is multiplied on Python floats: both factors are
        float32 values, their exact product fits a float64, and `fromiter` rounds it to
        float32 once, which is numpy's float32 product bit for bit."""
        text = normalize_title(title)
        words = words_of(text)
        terms = with_bigrams(words)
        counted = [self._term_counts(terms, self.vocabulary_)]
        most = len(terms)
        if self.char_ngram:
            grams = grams_of(text, self.char_ngram)
            counted.append(self._term_counts(grams, lists.char_vocabulary))
            most = max(most, len(grams))
        size = sum(map(len, counted))
        columns = np.fromiter(itertools.chain(*counted), dtype=np.intp, count=size)
        tf, idf = lists.sublinear(most), lists.idf
        weights = np.fromiter(
            (tf[count] * idf[column] for block in counted for column, count in block.items()),
            dtype=np.float32,
            count=size,
        )
        normalise_blocks(weights, map(len, counted))
        return columns, weights, words

    @staticmethod
    def _term_counts(terms: list[str], vocabulary: dict[str, int]) -> dict[int, int]:
        """Occurrences of each known term's column, in first-seen order (a plain loop: a
        `Counter` costs twice as much for the few dozen terms of a title)."""
        counts: dict[int, int] = {}
        for column in map(vocabulary.get, terms):
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        return counts

    def _margins(
        self, titles: Sequence[str], lists: _ServingLists
    ) -> tuple[np.ndarray, list[list[str]]]:
        """SVM margins, shape (n_titles, n_tags), and each title's words: per title one
        product of its few non-zero features with the stacked weight matrix."""
        margins = np.empty((len(titles), len(self.intercept_)), dtype=np.float32)
        words = []
        for row, title in enumerate(titles):
            columns, weights, title_words = self._features(title, lists)
            np.dot(weights, self.coef_[columns], out=margins[row])
            words.append(title_words)
        margins += self.intercept_
        return margins, words

    def decision_function(self, titles: Sequence[str]) -> np.ndarray:
        """SVM margins, shape (n_titles, n_tags)."""
        return self._margins(titles, self._serving_lists())[0]

    def calibrate(self, centered: np.ndarray) -> np.ndarray:
        """Probability that a tag is right, from its margin minus its threshold."""
        knots_x, knots_y = self.calibration_
        scores: np.ndarray = np.interp(centered, knots_x, knots_y)
        return scores

    def predict_scores(self, titles: Sequence[str]) -> np.ndarray:
        """Calibrated scores in [0, 1]: the estimated probability that each tag is right."""
        return self.calibrate(self.decision_function(titles) - self.thresholds_)

    def predict(self, titles: Sequence[str], alternatives: int | None = None) -> list[Prediction]:
        """`alternatives`: rank only the chosen tags and that many others (a server showing a
        few suggestions need not turn every tag of the vocabulary into Python objects)."""
        lists = self._serving_lists()
        margins, words = self._margins(titles, lists)
        margins -= self.thresholds_
        return [
            self._prediction(centered, alternatives, title_words, lists)
            for centered, title_words in zip(margins.tolist(), words, strict=True)
        ]

    def _prediction(
        self,
        centered: list[float],
        alternatives: int | None,
        words: list[str],
        lists: _ServingLists,
    ) -> Prediction:
        """Tags ranked by margin over threshold (the scores follow the same order); those at or
        above their threshold are chosen, at most max_tags, and always at least the best.

        On Python floats: for one served title the few numpy calls this replaced (a
        comparison, a count, an argsort, two gathers, the calibration of every tag) cost
        more than ranking and calibrating the handful of tags shown (see _features).
        `sorted(..., reverse=True)` keeps ties in index order, as numpy's stable argsort of
        the negated margins did, so the ranking is the same.
        """
        order = sorted(range(len(centered)), key=centered.__getitem__, reverse=True)
        chosen = max(1, sum(centered[tag] >= 0 for tag in order[: self.max_tags]))
        if alternatives is not None:
            order = order[: chosen + alternatives]
        # Scores to 4 decimals exactly as numpy's round(4) of their float64 values does
        # (times 1e4, half to even, divided by 1e4).
        ranked = [
            (lists.classes[tag], round(lists.calibrate(centered[tag]) * 10000.0) / 10000.0)
            for tag in order
        ]
        return Prediction(tags=[tag for tag, _ in ranked[:chosen]], scores=ranked, words=words)

    def _serving_arrays(
        self,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, int], np.ndarray]:
        """What `_ServingLists` are made from."""
        return (self.classes_, self.calibration_, self.vocabulary_, self.idf_)

    def _serving_lists(self) -> _ServingLists:
        """The model's serving arrays as Python objects, built again only when one of them
        is replaced (a fit, a bundle load)."""
        cached: _ServingLists | None = self.__dict__.get("_serving_lists_")
        if cached is None or not cached.made_from(self):
            cached = _ServingLists(self)
            self._serving_lists_ = cached
        return cached

    def predict_tag_sets(self, titles: Sequence[str]) -> list[list[str]]:
        """The chosen tags of each title (only they are calibrated)."""
        return [p.tags for p in self.predict(titles, alternatives=0)]
