"""What a fit trains on, and the fit itself (which runs in the worker process).

The training set is the bootstrap corpus plus the accepted corrections:

- A correction is authoritative for its title: the newest correction of a
  title (compared case- and space-insensitively) replaces older corrections
  and the bootstrap rows of that title, so a fixed label is not outvoted by
  the mistake it fixed, and re-corrected titles do not pile up.
- A tag the bootstrap corpus does not know enters training only once it was
  given to at least `min_support` distinct titles by at least
  `min_annotators` distinct annotators, so a typo or one user's invented tag
  (however many titles they tag with it) never becomes a class. Until then it is held back (the row is
  still stored; it trains on its other tags, if any). Rows without an
  annotator (from before annotator ids) count as one annotator.
- Every `NEW_TAG_SLICE`-th title carrying a new tag (by a hash of the title, so
  the same corrections stay held out from fit to fit) is held out of
  training: the gate judges the new tag on that slice, since the test set
  cannot contain it.
- A training window (`window` rows, TAGLOOP_TRAINING_WINDOW) bounds what a
  refit costs however large the corpus grows: when the rows exceed it, the
  corrections come first (newest first, up to the window) and a fixed sample
  of the bootstrap corpus fills the rest (`within_window`). A corpus within
  the window trains exactly as without one.

`fit_candidate` and `score_bundle` are the worker's entry points: plain
functions of picklable arguments, importing the scikit-learn stack lazily so
the learner's own process stays light.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from learning_service.store import StoredFeedback
from tagloop.domain.drift import TAG_COUNTS_KEY, tag_counts
from tagloop.domain.text import normalize_title

PARENT_CHECK_SECONDS = 0.5
NEW_TAG_SLICE = 5
"""One in this many titles carrying a new tag is held out to judge it (the rest train)."""
WINDOW_SEED = b"tagloop-training-window-v1\n"
"""Seeds the bootstrap sample of a training window (`within_window`); changing it changes
which bootstrap rows every windowed refit trains on."""
WORKER_IMPORTS = (
    "tagloop.domain.bundle",
    "tagloop.domain.evaluation",
    # What the model's fit and the evaluation import where they use it (so that serving
    # never loads scikit-learn): here as the worker starts, not in its first fit.
    "joblib",
    "scipy.stats",
    "sklearn.feature_extraction.text",
    "sklearn.isotonic",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "sklearn.svm",
)


@dataclass(frozen=True)
class Corpus:
    titles: list[str]
    tags: list[list[str]]

    def __len__(self) -> int:
        return len(self.titles)

    def vocabulary(self) -> set[str]:
        return set().union(*map(set, self.tags))

    def digest(self) -> str:
        """sha256 of the exact rows, recorded so a model can be traced to its data."""
        digest = hashlib.sha256()
        for title, tags in zip(self.titles, self.tags, strict=True):
            digest.update(json.dumps([title, tags], ensure_ascii=False).encode() + b"\n")
        return digest.hexdigest()


UNKNOWN_ANNOTATOR = ""


class NewTagSupport:
    """Distinct titles and annotators per tag outside the known vocabulary (thread-safe)."""

    def __init__(self, known: set[str], min_support: int, min_annotators: int = 1) -> None:
        self.known = known
        self.min_support = min_support
        self.min_annotators = min_annotators
        self._titles: dict[str, set[str]] = defaultdict(set)
        self._annotators: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()

    def add(self, title: str, tags: Iterable[str], annotator: str | None = None) -> None:
        with self._lock:
            for tag in tags:
                if tag not in self.known:
                    self._titles[tag].add(title.casefold())
                    self._annotators[tag].add(annotator or UNKNOWN_ANNOTATOR)

    def _supported(self, tag: str) -> bool:
        return (
            len(self._titles.get(tag, ())) >= self.min_support
            and len(self._annotators.get(tag, ())) >= self.min_annotators
        )

    def eligible(self, tag: str) -> bool:
        with self._lock:
            return tag in self.known or self._supported(tag)

    def held_back(self) -> dict[str, int]:
        """New tags still below a threshold, with their current support (distinct titles)."""
        with self._lock:
            return {
                tag: len(titles)
                for tag, titles in sorted(self._titles.items())
                if not self._supported(tag)
            }


@dataclass(frozen=True)
class TrainingSet:
    train: Corpus
    new_tag_slice: Corpus
    """Held-out corrections carrying new tags: the gate judges those tags on them."""
    held_back: dict[str, int]
    """New tags below the support threshold, with their support."""


def _latest_per_title(feedback: Sequence[StoredFeedback]) -> dict[str, StoredFeedback]:
    """The newest correction of each title, oldest first (a re-corrected title moves to the end,
    so the window keeps the titles corrected most recently)."""
    latest: dict[str, StoredFeedback] = {}
    for row in feedback:
        key = normalize_title(row.title)
        latest.pop(key, None)
        latest[key] = row
    return latest


def _sample_rank(title: str) -> bytes:
    """A title's fixed place in the bootstrap sample: a seeded hash, the same in every refit
    and every process, so a smaller fill is a subset of a larger one and successive refits
    train on (nearly) the same bootstrap rows."""
    return hashlib.sha256(WINDOW_SEED + normalize_title(title).encode()).digest()


def within_window(bootstrap: Corpus, corrections: Corpus, window: int | None) -> Corpus:
    """At most `window` rows: every correction that fits (`corrections` oldest first, so the
    newest are kept) and the bootstrap rows of lowest `_sample_rank` filling the rest, each
    part in its original order. Within the window (or with none): `bootstrap + corrections`."""
    if window is None or len(bootstrap) + len(corrections) <= window:
        return Corpus(bootstrap.titles + corrections.titles, bootstrap.tags + corrections.tags)
    first_correction = max(0, len(corrections) - window)
    fill = window - (len(corrections) - first_correction)
    ranked = sorted(range(len(bootstrap)), key=lambda i: _sample_rank(bootstrap.titles[i]))
    sample = sorted(ranked[:fill])
    return Corpus(
        [bootstrap.titles[i] for i in sample] + corrections.titles[first_correction:],
        [bootstrap.tags[i] for i in sample] + corrections.tags[first_correction:],
    )


def _in_new_tag_slice(title_key: str) -> bool:
    return zlib.crc32(title_key.encode()) % NEW_TAG_SLICE == 0


def training_corpus(
    bootstrap: Corpus,
    feedback: Sequence[StoredFeedback],
    min_support: int,
    min_annotators: int = 1,
    window: int | None = None,
) -> TrainingSet:
    """Bootstrap rows not overridden by a correction + the newest correction per title,
    minus held-back tags, minus the new-tag slice; at most `window` rows (`within_window`)."""
    known = bootstrap.vocabulary()
    latest = _latest_per_title(feedback)
    support = NewTagSupport(known, min_support, min_annotators)
    for row in latest.values():
        support.add(row.title, row.tags, row.annotator)
    kept_bootstrap = Corpus([], [])
    for title, tags in zip(bootstrap.titles, bootstrap.tags, strict=True):
        if normalize_title(title) not in latest:
            kept_bootstrap.titles.append(title)
            kept_bootstrap.tags.append(tags)
    corrections = Corpus([], [])
    held_out = Corpus([], [])
    for key, row in latest.items():
        kept = [tag for tag in row.tags if support.eligible(tag)]
        if not kept:
            continue
        new = any(tag not in known for tag in kept)
        target = held_out if new and _in_new_tag_slice(key) else corrections
        target.titles.append(row.title)
        target.tags.append(kept)
    train = within_window(kept_bootstrap, corrections, window)
    return TrainingSet(train, held_out, support.held_back())


def worker_init(parent_pid: int) -> None:
    """Fit-worker initializer: exit when the learner dies, and import scikit-learn up front
    (`WORKER_IMPORTS`).

    A SIGKILLed learner cannot tell its worker to stop, and the worker would
    otherwise wait on its task queue forever; so it watches its parent.
    """

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
    for module in WORKER_IMPORTS:
        importlib.import_module(module)


def fit_candidate(
    data: TrainingSet,
    known_tags: set[str],
    test: Corpus,
    out_dir: str,
    metadata: dict[str, Any],
    fit_jobs: int = 2,
) -> dict[str, Any]:
    """Fit on `data.train` with `fit_jobs` threads, save the bundle to `out_dir`, score it on
    `test` (and its new tags on `data.new_tag_slice`); returns its metadata."""
    from tagloop.domain.bundle import save_bundle
    from tagloop.domain.evaluation import evaluate_with_tags, new_tag_report
    from tagloop.domain.model import TagModel

    started = time.perf_counter()
    model = TagModel(n_jobs=fit_jobs).fit(data.train.titles, data.train.tags)
    fitted = time.perf_counter()
    metrics, tags = evaluate_with_tags(model, test.titles, test.tags)
    new_tags = new_tag_report(
        model,
        data.new_tag_slice.titles,
        data.new_tag_slice.tags,
        set(model.classes_.tolist()) - known_tags,
        tags,
    )
    timings = {
        "fit_seconds": round(fitted - started, 3),
        "evaluate_seconds": round(time.perf_counter() - fitted, 3),
    }
    return save_bundle(
        model,
        out_dir,
        {
            **metadata,
            **timings,
            "metrics": metrics,
            "tags": tags,
            "new_tags": new_tags,
            "training_data_sha256": data.train.digest(),
            TAG_COUNTS_KEY: tag_counts(data.train.tags),  # the prior of drift monitoring
        },
    )


def score_bundle(bundle_dir: str, expected_sha256: str | None, test: Corpus) -> dict[str, Any]:
    """Score an existing bundle on `test` (the current model, when the test set changed):
    its metrics and per-tag report, as the gate compares them."""
    from tagloop.domain.bundle import load_bundle
    from tagloop.domain.evaluation import evaluate_with_tags

    model, _ = load_bundle(bundle_dir, expected_sha256)
    metrics, tags = evaluate_with_tags(model, test.titles, test.tags)
    return {"metrics": metrics, "tags": tags}
