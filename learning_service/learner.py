"""The learner assembled: store, ingest loop, refitter and broadcaster around one stop event."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from learning_service.agreement import Agreement
from learning_service.backup import Backup
from learning_service.broadcast import Broadcaster
from learning_service.config import LearnerSettings
from learning_service.fit_worker import FitWorker
from learning_service.ingest import Ingestor
from learning_service.metrics import LearnerMetrics
from learning_service.refit import Refitter
from learning_service.retry import Blocked
from learning_service.rollout import Rollout
from learning_service.store import FeedbackStore, StoredFeedback
from learning_service.training import Corpus, NewTagSupport
from learning_service.validated import DIRECTORY as VALIDATED_DIRECTORY
from learning_service.validated import ValidatedVersions
from tagloop.channels.bus import Bus, RejectLog
from tagloop.channels.provisioning import Provisioner
from tagloop.channels.registry import Registry
from tagloop.domain.data import load_labeled

log = logging.getLogger(__name__)

HELD_BACK_SHOWN = 50


def load_corpus(path: Path) -> Corpus:
    data = load_labeled(path)
    return Corpus(data.titles, data.tags)


class Learner:
    """Owns the threads; `stop()` lets the ingest loop finish (store + ack) its batch."""

    def __init__(
        self,
        settings: LearnerSettings,
        bus: Bus,
        registry: Registry,
        worker: FitWorker | None = None,
    ) -> None:
        """`worker`: a fit worker `serve` may have started already (else one is made)."""
        self.settings = settings
        self.bus = bus
        self.registry = registry
        self.metrics = LearnerMetrics()
        self.stop_event = threading.Event()
        bootstrap = load_corpus(settings.train_data)
        test = load_corpus(settings.test_data)
        self.store = FeedbackStore(settings.feedback_csv)
        self.metrics.corpus_rows.labels("bootstrap").set(len(bootstrap))
        self.corpus_sizes = {"bootstrap_rows": len(bootstrap), "test_rows": len(test)}
        self.metrics.quarantined.inc(self.store.quarantined)
        self.support = NewTagSupport(
            bootstrap.vocabulary(), settings.new_tag_min_support, settings.new_tag_min_annotators
        )
        # Why Pub/Sub work cannot proceed (IAM, a missing resource): /readyz shows it.
        self.blocked = Blocked()
        provisioner = Provisioner(bus, settings.common.pubsub_provision)
        self.broadcaster = Broadcaster(
            bus,
            settings.common.model_topic,
            self.stop_event,
            self.metrics,
            provisioner,
            self.blocked,
        )
        self.refitter = Refitter(
            settings,
            self.store,
            registry,
            self.broadcaster,
            self.metrics,
            bootstrap,
            test,
            self.stop_event,
            worker,
        )
        self.rollout = Rollout(
            settings.rollout,
            registry,
            self.broadcaster,
            self.refitter.promote,
            settings.data_dir / "rollout",
            self.metrics.registry,
            self.metrics.retries,
            self.stop_event,
        )
        self.refitter.stage_candidate = self.rollout.begin
        # Read at scrape time, so they are never stale.
        self.metrics.corpus_rows.labels("feedback").set_function(lambda: len(self.store))
        self.metrics.samples_since_fit.set_function(self.refitter.samples_since_fit)
        self.agreement = Agreement()
        self.metrics.agreement.set_function(self.agreement.overall)
        self.validated = ValidatedVersions(settings.data_dir / VALIDATED_DIRECTORY)
        self.metrics.validated_size.set_function(self.validated.latest_size)
        self.ingestor = Ingestor(
            bus,
            settings.common.feedback_topic,
            settings.common.feedback_subscription,
            self.store,
            RejectLog(
                settings.rejects_log, settings.reject_log_max_bytes, settings.reject_log_backups
            ),
            self.metrics,
            self.support,
            self.agreement,
            self._stored,
            self.stop_event,
            provisioner,
            self.blocked,
        )
        self.backup = (
            Backup(
                self.store,
                registry,
                settings.backup_interval_seconds,
                self.stop_event,
                self.metrics,
            )
            if settings.backup_interval_seconds > 0
            else None
        )
        self.metrics.stale_alert_seconds.set(settings.model_stale_alert_seconds)
        self.metrics.ready.set_function(lambda: float(all(self.readiness().values())))

    @classmethod
    def from_settings(cls, settings: LearnerSettings, worker: FitWorker | None = None) -> Learner:
        registry = Registry.from_settings(
            settings.common, signer=settings.require_signer(), trusted=settings.keys.trusted()
        )
        return cls(settings, Bus(settings.common.gcp_project), registry, worker)

    def _stored(self, rows: list[StoredFeedback]) -> None:
        """New corrections: the refit schedule and the rollout's evidence both count them."""
        self.refitter.notify()
        self.rollout.observe(rows)

    def start(self) -> None:
        for thread in (self.broadcaster, self.refitter, self.ingestor, self.rollout):
            thread.start()
        if self.backup is not None:
            self.backup.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop ingesting after the current batch, abandon a running fit, close clients."""
        log.info("stopping the learner")
        self.stop_event.set()
        self.refitter.notify()
        self.broadcaster.wake()
        self.rollout.wake()
        self.refitter.worker.kill()  # abandon a running fit (its samples are durable)
        for thread in (self.ingestor, self.refitter, self.rollout, self.broadcaster):
            if thread.is_alive():
                thread.join(timeout)
        if self.ingestor.is_alive():
            log.error("the ingest loop did not stop within %.0f s", timeout)
        else:
            if self.backup is not None:
                self.backup.join(timeout)
                self.backup.copy()  # the last rows too, before the pod goes
            self.store.close()
        self.bus.close()

    def readiness(self) -> dict[str, bool]:
        """Ready = serving its purpose: a current model known, the subscription pulled,
        and no Pub/Sub operation blocked by a permanent error (see `not_ready_reasons`)."""
        refitter = self.refitter
        return {
            "registry": refitter.loaded,
            "model": refitter.current is not None,
            "pubsub": self.ingestor.connected and not self.blocked.reasons(),
        }

    def not_ready_reasons(self) -> dict[str, str]:
        """Operation -> why it cannot proceed (which resource, which permission)."""
        return self.blocked.reasons()

    def status(self) -> dict[str, Any]:
        refitter = self.refitter
        current = refitter.current or {}
        held_back = self.support.held_back()
        return {
            "current_version": current.get("version"),
            "current_metrics": current.get("metrics"),
            "corpus": {**self.corpus_sizes, "feedback_rows": len(self.store)},
            "refit_every": self.settings.refit_every,
            "samples_since_fit": refitter.samples_since_fit(),
            "fit_in_progress": refitter.fit_in_progress,
            "last_decision": refitter.last_decision,
            "held_back_tags": {
                "count": len(held_back),
                "min_support": self.settings.new_tag_min_support,
                "min_annotators": self.settings.new_tag_min_annotators,
                "top": dict(sorted(held_back.items(), key=lambda item: -item[1])[:HELD_BACK_SHOWN]),
            },
            "online_quality": self.metrics.online_quality(),
            "agreement": self.agreement.summary(),
            "validated": self.validated.latest(),
            "pending_broadcast": self.broadcaster.pending,
            "rollout": self.rollout.status()["rollout"],
            "ready": self.readiness(),
        }
