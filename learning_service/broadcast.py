"""Publishing model updates (contracts §3) with retries, latest version first.

Replicas only care about the newest promoted model (and they re-read
`models/current.json` on their own schedule), so while Pub/Sub is down a
newer update replaces an older pending one instead of queueing behind it.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

from learning_service.metrics import LearnerMetrics
from learning_service.retry import ADMIN_TIMEOUT, Blocked, Stopped, retry
from tagloop.channels.bus import Bus
from tagloop.channels.provisioning import Provisioner, guarded
from tagloop.domain.messages import ModelUpdate

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0


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
        self._pending: ModelUpdate | None = None
        self._wake = threading.Condition()

    @property
    def pending(self) -> str | None:
        """The version waiting to be announced, if any."""
        update = self._pending
        return update.version if update else None

    def announce(self, update: ModelUpdate) -> None:
        with self._wake:
            self._pending = update
            self._wake.notify()

    def wake(self) -> None:
        """Let the thread notice `stop`."""
        with self._wake:
            self._wake.notify()

    def _publish(self, path: str, update: ModelUpdate) -> str:
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
                    while self._pending is None and not self.stop.is_set():
                        self._wake.wait()
                    update = self._pending
                if update is None:
                    return
                retry(
                    "pubsub.publish_model_update",
                    partial(self._publish, path, update),
                    self.stop,
                    self.metrics.retries,
                    self.blocked,
                )
                log.info(
                    "announced model version %s", update.version, extra={"version": update.version}
                )
                with self._wake:
                    if self._pending is update:
                        self._pending = None
        except Stopped:
            if self._pending is not None:
                log.warning("shutting down with model update %s unannounced", self._pending.version)
