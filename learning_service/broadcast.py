"""Publishing model updates and rollout stage changes (contracts §3) with retries.

Replicas only care about the newest promoted model and the newest stage
(and they re-read `models/current.json` and `models/rollout.json` on their
own schedule), so while Pub/Sub is down a newer message of a kind replaces
an older pending one of that kind instead of queueing behind it.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from learning_service.metrics import LearnerMetrics
from learning_service.retry import ADMIN_TIMEOUT, Blocked, Stopped, retry
from tagloop.channels.bus import Bus
from tagloop.channels.provisioning import Provisioner, guarded
from tagloop.domain.messages import ModelUpdate, StageChange

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0

Announcement = ModelUpdate | StageChange


class Broadcaster(threading.Thread):
    def __init__(
        self,
        bus: Bus,
        topic: str,
        stop: threading.Event,
        metrics: LearnerMetrics,
        provisioner: Provisioner | None = None,
        blocked: Blocked | None = None,
    ):
        super().__init__(name="broadcaster", daemon=True)
        self.bus = bus
        self.provisioner = provisioner or Provisioner(bus, provision=True)
        self.blocked = blocked or Blocked()
        self.topic = topic
        self.stop = stop
        self.metrics = metrics
        self._pending: dict[str, Announcement] = {}  # by schema: the newest of each kind
        self._wake = threading.Condition()

    @property
    def pending(self) -> str | None:
        """The version waiting to be announced, if any."""
        update = self._pending.get(ModelUpdate.schema)
        return update.version if update else None

    def announce(self, update: Announcement) -> None:
        with self._wake:
            self._pending[update.schema] = update
            self._wake.notify()

    def wake(self) -> None:
        """Let the thread notice `stop`."""
        with self._wake:
            self._wake.notify()

    def _publish(self, path: str, update: Announcement) -> str:
        return guarded(
            "publish", path, lambda: self.bus.publish(self.topic, update, PUBLISH_TIMEOUT)
        )

    def run(self) -> None:
        try:
            path = retry(
                "pubsub.ensure_topic",
                lambda: self.provisioner.topic(self.topic, ADMIN_TIMEOUT),
                self.stop,
                self.metrics.retries,
                self.blocked,
            )
            while True:
                with self._wake:
                    while not self._pending and not self.stop.is_set():
                        self._wake.wait()
                    if not self._pending:
                        return
                    # Model updates first: a stage change may refer to the new current model.
                    update = min(
                        self._pending.values(), key=lambda u: u.schema != ModelUpdate.schema
                    )
                retry(
                    "pubsub.publish_model_update",
                    partial(self._publish, path, update),
                    self.stop,
                    self.metrics.retries,
                    self.blocked,
                )
                log.info(
                    "announced %s of model version %s",
                    type(update).__name__,
                    update.version,
                    extra={"version": update.version},
                )
                with self._wake:
                    if self._pending.get(update.schema) is update:
                        del self._pending[update.schema]
        except Stopped:
            for pending in self._pending.values():
                log.warning("shutting down with %s unannounced", pending)
