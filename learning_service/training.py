"""What a fit trains on, and the fit itself (which runs in the worker process).

The training set is the bootstrap corpus plus every accepted correction, with
one guard: a tag the bootstrap corpus does not know enters training only once
it was given to at least `min_support` distinct titles by at least
`min_annotators` distinct annotators, so a typo or one user's invented tag
(however many titles they tag with it) never becomes a class. Until then it is
held back (the row is still stored; it trains on its other tags, if any).
Rows without an annotator (from before annotator ids) count as one annotator.

`fit_candidate` and `score_bundle` are the worker's entry points: plain
functions of picklable arguments, importing the scikit-learn stack lazily so
the learner's own process stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from learning_service.store import StoredFeedback
from tagloop.domain.drift import TAG_COUNTS_KEY, tag_counts

PARENT_CHECK_SECONDS = 0.5


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


def training_corpus(
    bootstrap: Corpus,
    feedback: Sequence[StoredFeedback],
    min_support: int,
    min_annotators: int = 1,
) -> tuple[Corpus, dict[str, int]]:
    """Bootstrap rows + feedback rows minus held-back tags; also returns the held-back tags."""
    support = NewTagSupport(bootstrap.vocabulary(), min_support, min_annotators)
    for row in feedback:
        support.add(row.title, row.tags, row.annotator)
    titles, tags = list(bootstrap.titles), list(bootstrap.tags)
    for row in feedback:
        kept = [tag for tag in row.tags if support.eligible(tag)]
        if kept:
            titles.append(row.title)
            tags.append(kept)
    return Corpus(titles, tags), support.held_back()


def worker_init(parent_pid: int) -> None:
    """Fit-worker initializer: exit when the learner dies, and import scikit-learn up front.

    A SIGKILLed learner cannot tell its worker to stop, and the worker would
    otherwise wait on its task queue forever; so it watches its parent.
    """

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
    import tagloop.domain.bundle
    import tagloop.domain.evaluation  # noqa: F401


def fit_candidate(
    train: Corpus, test: Corpus, out_dir: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Fit on `train`, save the bundle to `out_dir`, score it on `test`; returns its metadata."""
    from tagloop.domain.bundle import save_bundle
    from tagloop.domain.evaluation import evaluate
    from tagloop.domain.model import TagModel

    started = time.perf_counter()
    model = TagModel().fit(train.titles, train.tags)
    fitted = time.perf_counter()
    metrics = evaluate(model, test.titles, test.tags)
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
            "training_data_sha256": train.digest(),
            TAG_COUNTS_KEY: tag_counts(train.tags),  # the prior of drift monitoring
        },
    )


def score_bundle(bundle_dir: str, expected_sha256: str | None, test: Corpus) -> dict[str, Any]:
    """Score an existing bundle on `test` (the current model, when the test set changed)."""
    from tagloop.domain.bundle import load_bundle
    from tagloop.domain.evaluation import evaluate

    model, _ = load_bundle(bundle_dir, expected_sha256)
    return evaluate(model, test.titles, test.tags)
