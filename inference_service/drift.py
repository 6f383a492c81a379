"""Drift metrics, counted per prediction at the cost of a few hash lookups.

Two questions, answered by Prometheus over time windows rather than here:

- Do users type words the model never saw? Each title's words (the model's
  own tokenizer, `tagloop.domain.text.tokenize`, as the prediction carries
  them) are looked up in the model's vocabulary: `tagloop_inference_drift_words_total` and
  `tagloop_inference_drift_unknown_words_total` give the out-of-vocabulary
  share as a ratio of rates.
- Does the model answer with a mix of tags unlike its training corpus?
  `tagloop_inference_predicted_tags_total{tag}` counts the chosen tags and
  `tagloop_inference_training_tag_share{tag}` holds each tag's share of the
  training corpus's tag assignments (from the version's signed metadata);
  the recording rule `tagloop:predicted_tag_mix_divergence` is the total
  variation distance between the two distributions.

Cardinality stays low: the only label is a tag of the served model's own
vocabulary (never user input). Per request the cost is one dictionary lookup
per word (the model tokenised the title already) and one counter increment
per chosen tag; the per-version state (counter children, the vocabulary) is built once,
on the first prediction of a version.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from inference_service.model_holder import LoadedModel
from tagloop import metric_writes
from tagloop.domain.drift import tag_shares, unknown_words
from tagloop.domain.model import Prediction, TagModel
from tagloop.metric_writes import Write

WORDS = Counter(
    "tagloop_inference_drift_words_total",
    "Words in the titles tagged (the model's tokenizer), the denominator of the OOV share.",
)
UNKNOWN_WORDS = Counter(
    "tagloop_inference_drift_unknown_words_total",
    "Words in the titles tagged that the serving model's vocabulary lacks (out of vocabulary).",
)
PREDICTED_TAGS = Counter(
    "tagloop_inference_predicted_tags_total",
    "Tags chosen in predictions, by tag (the served model's vocabulary only).",
    ["tag"],
)
TRAINING_TAG_SHARE = Gauge(
    "tagloop_inference_training_tag_share",
    "Each tag's share of the tag assignments in the served model's training corpus "
    "(0 for tags the served model does not know; absent for versions without tag counts).",
    ["tag"],
    multiprocess_mode="livemostrecent",
)
_add_words = metric_writes.adder(WORDS)
_add_unknown_words = metric_writes.adder(UNKNOWN_WORDS)
KEPT_VERSIONS = 4
"""Monitors kept at once: the served model plus rollout candidates and a predecessor."""


@dataclass(frozen=True)
class VersionMonitor:
    """One model version's drift references, built once and shared by every request."""

    version: str
    vocabulary: dict[str, int]
    """The model's feature index; a word is known when it is a key (bigrams hold a space,
    which no word does)."""
    tag_counters: dict[str, Write]
    """Adds to each tag's `PREDICTED_TAGS` child (tagloop/metric_writes.py)."""

    @classmethod
    def build(cls, version: str, model: TagModel) -> VersionMonitor:
        tags: list[str] = model.classes_.tolist()
        counters = {tag: metric_writes.adder(PREDICTED_TAGS.labels(tag)) for tag in tags}
        return cls(version, model.vocabulary_, counters)

    def observe(self, predictions: Sequence[Prediction]) -> None:
        words = unknown = 0
        counters = self.tag_counters
        for prediction in predictions:
            words += len(prediction.words)
            unknown += unknown_words(prediction.words, self.vocabulary)
            for tag in prediction.tags:
                counters[tag](1)
        _add_words(words)
        _add_unknown_words(unknown)


class DriftMonitor:
    """The monitors of the versions a process serves; the first prediction of a version
    also publishes its training tag shares (a process serves one main model at a time)."""

    def __init__(self) -> None:
        self._monitors: dict[str, VersionMonitor] = {}
        self._lock = threading.Lock()
        self._published: dict[str, float] = {}

    def observe(self, loaded: LoadedModel, predictions: Sequence[Prediction]) -> None:
        """Count one request's words and chosen tags against the served model `loaded`."""
        monitor = self._monitors.get(loaded.version)
        if monitor is None:
            monitor = self._start(loaded)
        monitor.observe(predictions)

    def _start(self, loaded: LoadedModel) -> VersionMonitor:
        with self._lock:
            monitor = self._monitors.get(loaded.version)
            if monitor is not None:
                return monitor
            monitor = VersionMonitor.build(loaded.version, loaded.model)
            self._publish_prior(tag_shares(loaded.metadata))
            if len(self._monitors) >= KEPT_VERSIONS:
                self._monitors.pop(next(iter(self._monitors)))
            self._monitors[loaded.version] = monitor
            return monitor

    def _publish_prior(self, shares: dict[str, float]) -> None:
        """Set the training shares of the newest version; tags it dropped go to 0."""
        for tag in self._published.keys() - shares.keys():
            TRAINING_TAG_SHARE.labels(tag).set(0)
        for tag, share in shares.items():
            TRAINING_TAG_SHARE.labels(tag).set(share)
        self._published = shares


MONITOR = DriftMonitor()
"""The process's monitor (each gunicorn worker has its own; metrics are multiprocess)."""
