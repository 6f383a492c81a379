"""The learner's Prometheus metrics, in a registry of its own.

The names are used by alert rules and dashboards (helm/tagloop/files/alerts.yml),
so keep them. A registry per learner lets tests run several learners in one
process; `/metrics` exposes it next to the shared HTTP request metrics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tagloop.domain.evaluation import METRIC_NAMES

ONLINE_WINDOW = 1000
"""Feedback items (with the served model's predictions) the online quality is measured over."""


class LearnerMetrics:
    """Every metric the learner exports (all prefixed `tagloop_`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.model = {
            name: Gauge(
                f"tagloop_model_{name}", f"Current model's {name} on the test set.", registry=r
            )
            for name in METRIC_NAMES
        }
        self.model_info = Gauge(
            "tagloop_model_info",
            "The current (promoted) model version: 1.",
            ["version"],
            registry=r,
        )
        self.model_updated = Gauge(
            "tagloop_model_last_update_timestamp_seconds",
            "When the current model was promoted (Unix time).",
            registry=r,
        )
        self.received = Counter(
            "tagloop_feedback_received", "Feedback messages pulled.", registry=r
        )
        self.accepted = Counter(
            "tagloop_feedback_accepted", "Feedback stored durably (new feedback_id).", registry=r
        )
        self.duplicates = Counter(
            "tagloop_feedback_duplicate",
            "Feedback dropped as an already-stored feedback_id.",
            registry=r,
        )
        self.rejected = Counter(
            "tagloop_feedback_rejected",
            "Malformed feedback acked and logged, by reason.",
            ["reason"],
            registry=r,
        )
        self.quarantined = Counter(
            "tagloop_feedback_quarantined",
            "Unreadable feedback.csv lines moved to the quarantine file at start-up.",
            registry=r,
        )
        self.corpus_rows = Gauge(
            "tagloop_corpus_rows", "Rows available for training, by source.", ["source"], registry=r
        )
        self.samples_since_fit = Gauge(
            "tagloop_samples_since_fit", "Accepted feedback not yet in a fit.", registry=r
        )
        self.held_back_tags = Gauge(
            "tagloop_new_tags_held_back",
            "New tags stored but kept out of training until they have enough support.",
            registry=r,
        )
        self.fit_in_progress = Gauge("tagloop_fit_in_progress", "1 while a fit runs.", registry=r)
        self.model_refusals = Counter(
            "tagloop_model_refusals",
            "Registry objects (current.json, a version's metadata) refused as not signed by a "
            "trusted key, by reason; the gate then compares with the learner's own current model.",
            ["reason"],
            registry=r,
        )
        self.fit_duration = Histogram(
            "tagloop_fit_duration_seconds",
            "Fit + evaluation time of a candidate model.",
            buckets=(1, 2, 5, 10, 15, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.fit_failures = Counter(
            "tagloop_fit_failures", "Fits that raised instead of producing a candidate.", registry=r
        )
        self.promotions = Counter(
            "tagloop_model_promotions", "Versions made current, by reason.", ["reason"], registry=r
        )
        self.rejections = Counter(
            "tagloop_model_rejections",
            "Candidates kept out of service, by reason.",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "tagloop_dependency_retries",
            "Failed attempts retried with backoff, by operation.",
            ["operation"],
            registry=r,
        )
        self.ready = Gauge(
            "tagloop_learner_ready",
            "1 while /readyz answers 200 (registry, model and Pub/Sub all usable).",
            registry=r,
        )
        self.stale_alert_seconds = Gauge(
            "tagloop_model_stale_alert_seconds",
            "TagloopModelStale threshold: promotion age that alerts while feedback flows.",
            registry=r,
        )
        self.backup_last_success = Gauge(
            "tagloop_backup_last_success_timestamp_seconds",
            "When feedback.csv was last copied to the bucket (Unix time; 0: never).",
            registry=r,
        )
        self.online_precision = Gauge(
            "tagloop_online_precision",
            f"Precision of the served predicted_tags against users' tags (last {ONLINE_WINDOW}).",
            registry=r,
        )
        self.online_recall = Gauge(
            "tagloop_online_recall",
            f"Recall of the served predicted_tags against users' tags (last {ONLINE_WINDOW}).",
            registry=r,
        )
        self.agreement = Gauge(
            "tagloop_annotator_agreement",
            "Mean pairwise Jaccard agreement of annotators on the titles two or more corrected.",
            registry=r,
        )
        self.validated_size = Gauge(
            "tagloop_validated_set_size",
            "Titles in the latest validated test set: two annotators agree (docs/data.md).",
            registry=r,
        )
        self._online = OnlineQuality()

    def set_current_model(
        self, version: str, metrics: Mapping[str, float | None], at: float
    ) -> None:
        self.model_info.clear()
        self.model_info.labels(version).set(1)
        for name, gauge in self.model.items():
            value = metrics.get(name)
            gauge.set(float("nan") if value is None else value)
        self.model_updated.set(at)

    def observe_online(self, predicted: list[str], actual: list[str]) -> None:
        """Score one correction of a served prediction (without a prediction there is none)."""
        if self._online.add(predicted, actual):
            self.online_precision.set(self._online.precision())
            self.online_recall.set(self._online.recall())

    def online_quality(self) -> dict[str, float | int | None]:
        return self._online.summary()


class OnlineQuality:
    """Micro-averaged precision and recall over the last ONLINE_WINDOW corrections, in O(1)."""

    def __init__(self, window: int = ONLINE_WINDOW) -> None:
        self._items: deque[tuple[int, int, int]] = deque(maxlen=window)
        self._hits = self._predicted = self._actual = 0

    def add(self, predicted: list[str], actual: list[str]) -> bool:
        if not predicted or not actual:
            return False
        if len(self._items) == self._items.maxlen:
            old_hits, old_predicted, old_actual = self._items[0]
            self._hits -= old_hits
            self._predicted -= old_predicted
            self._actual -= old_actual
        item = (len(set(predicted) & set(actual)), len(set(predicted)), len(set(actual)))
        self._items.append(item)
        self._hits += item[0]
        self._predicted += item[1]
        self._actual += item[2]
        return True

    def precision(self) -> float:
        return self._hits / self._predicted

    def recall(self) -> float:
        return self._hits / self._actual

    def summary(self) -> dict[str, float | int | None]:
        if not self._items:
            return {"window": 0, "precision": None, "recall": None}
        return {"window": len(self._items), "precision": self.precision(), "recall": self.recall()}
