"""The ingest loop: pull a batch, validate, store durably, then ack.

Acking only after the batch is fsync'd means a crash loses nothing: what was
not acked is redelivered, and the dedupe index (rebuilt from the CSV on
start-up) stores each feedback_id once. Malformed payloads are acked too,
after they are logged and appended to the reject log, so a poison message is
never redelivered forever. Validation is per message (the correction contract,
then the store's read-back check), so one message that cannot be stored is
rejected alone and the rest of its batch is stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from learning_service.agreement import Agreement
from learning_service.metrics import LearnerMetrics
from learning_service.retry import (
    ADMIN_TIMEOUT,
    FIRST_DELAY,
    MAX_DELAY,
    RECHECK_DELAY,
    Blocked,
    Stopped,
    failed,
    retry,
)
from learning_service.store import FeedbackStore, StoredFeedback
from learning_service.training import NewTagSupport
from tagloop.channels.bus import Bus, Received, RejectLog, parse_or_reject
from tagloop.channels.provisioning import Provisioner, guarded
from tagloop.domain.messages import parse_feedback, utc_now

log = logging.getLogger(__name__)

PULL_BATCH = 1000
PULL_TIMEOUT = 2.0  # seconds a pull may wait for messages; also bounds shutdown latency
ACK_DEADLINE_SECONDS = 60


class Ingestor(threading.Thread):
    def __init__(
        self,
        bus: Bus,
        topic: str,
        subscription: str,
        store: FeedbackStore,
        rejects: RejectLog,
        metrics: LearnerMetrics,
        support: NewTagSupport,
        agreement: Agreement,
        on_stored: Callable[[list[StoredFeedback]], None],
        stop: threading.Event,
        provisioner: Provisioner | None = None,
        blocked: Blocked | None = None,
    ) -> None:
        super().__init__(name="ingest", daemon=True)
        self.bus = bus
        self.topic = topic
        self.subscription = subscription
        self.store = store
        self.rejects = rejects
        self.metrics = metrics
        self.support = support
        self.agreement = agreement
        self.on_stored = on_stored
        self.stop = stop
        self.provisioner = provisioner or Provisioner(bus, provision=True)
        self.blocked = blocked or Blocked()
        self.connected = False
        for row in store.rows():
            support.add(row.title, row.tags, row.annotator)
            agreement.add(row.title, row.tags, row.annotator)
        metrics.held_back_tags.set(len(support.held_back()))

    def run(self) -> None:
        try:
            retry(
                "pubsub.ensure_subscription",
                self._ensure,
                self.stop,
                self.metrics.retries,
                self.blocked,
            )
        except Stopped:
            return
        path = self.bus.subscription_path(self.subscription)
        delay = FIRST_DELAY
        while not self.stop.is_set():
            try:
                batch = guarded(
                    "pull", path, lambda: self.bus.pull(self.subscription, PULL_BATCH, PULL_TIMEOUT)
                )
                self.connected = True
                self.blocked.clear("ingest")
                if batch:
                    self.handle(batch)
                delay = FIRST_DELAY
            except Exception as error:
                # Pub/Sub or the disk failed: nothing was acked, so nothing is lost. Wait:
                # back off if transient, re-check slowly if permanent (IAM, deleted subscription).
                self.connected = False
                wait = failed("ingest", error, self.blocked, self.metrics.retries, delay)
                self.stop.wait(wait)
                delay = FIRST_DELAY if wait == RECHECK_DELAY else min(MAX_DELAY, delay * 2)
        log.info("ingest stopped")

    def _ensure(self) -> None:
        self.provisioner.durable_subscription(
            self.topic, self.subscription, ACK_DEADLINE_SECONDS, ADMIN_TIMEOUT
        )

    def handle(self, batch: list[Received]) -> list[StoredFeedback]:
        """Validate, store and ack one batch; returns the newly stored rows."""
        self.metrics.received.inc(len(batch))
        received_at = utc_now()

        def parse(data: bytes, attributes: dict[str, str]) -> StoredFeedback:
            return StoredFeedback.from_feedback(parse_feedback(data, attributes), received_at)

        valid: list[StoredFeedback] = []
        for message in batch:
            row, reason = parse_or_reject(message, parse, self.rejects)
            if row is None:
                self.metrics.rejected.labels(reason).inc()
            else:
                valid.append(row)
        stored = self.store.append(valid)  # fsync'd before the ack below
        self.metrics.accepted.inc(len(stored))
        self.metrics.duplicates.inc(len(valid) - len(stored))
        for row in stored:
            self.metrics.observe_online(row.predicted_tags, row.tags)
            self.support.add(row.title, row.tags, row.annotator)
            self.agreement.add(row.title, row.tags, row.annotator)
        self.metrics.held_back_tags.set(len(self.support.held_back()))
        try:
            self.bus.ack(self.subscription, [message.ack_id for message in batch])
        except Exception as error:  # redelivered later and then dropped as duplicates
            log.warning("acking %d messages failed: %s", len(batch), error)
        if stored:
            self.on_stored(stored)
        return stored
