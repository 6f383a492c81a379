"""Keeps a worker's model equal to the promoted one, in one background thread.

Three triggers, all handled by that thread so loads never overlap:

- start-up: subscribe first, then read `models/current.json`, so no broadcast
  can fall between the two;
- a broadcast on the model topic, heard through a subscription of this
  process's own (every replica and worker hears every update). A broadcast
  older than the loaded version is out-of-order delivery and ignored, unless
  `current.json` names it: that is a rollback;
- reconciliation against `current.json` every TAGLOOP_RECONCILE_SECONDS, which
  catches a missed broadcast and retries failed loads (sooner, with backoff).

A failed download or verification keeps the old model serving.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import CancelledError

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture

from inference_service import metrics
from inference_service.loader import ModelLoader
from inference_service.model_holder import ModelHolder
from tagloop.bundle import BundleError
from tagloop.bus import Bus, Received, parse_or_reject, unique_subscription_name
from tagloop.messages import ModelUpdate, parse_model_update
from tagloop.registry import IntegrityError, Registry, RegistryError

log = logging.getLogger(__name__)

# Pub/Sub's shortest expiration: the subscription of a worker that died
# without deleting it disappears after a day of inactivity.
SUBSCRIPTION_TTL_SECONDS = 24 * 3600
RETRY_FIRST_SECONDS = 0.5
_WAKE = object()


def failure_reason(error: BaseException) -> str:
    """A bounded label for the failure metric."""
    if isinstance(error, IntegrityError):
        return "integrity"
    if isinstance(error, BundleError):
        return "invalid_bundle"
    if isinstance(error, RegistryError):
        return "registry"
    return "other"


class Reloader:
    def __init__(
        self,
        bus: Bus,
        registry: Registry,
        loader: ModelLoader,
        holder: ModelHolder,
        model_topic: str,
        reconcile_seconds: float,
    ) -> None:
        self.bus, self.registry, self.loader, self.holder = bus, registry, loader, holder
        self.model_topic = model_topic
        self.reconcile_seconds = reconcile_seconds
        self.subscription: str | None = None
        self._inbox: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._future: StreamingPullFuture | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0

    # -- lifecycle (call in the worker process, after fork) -------------------------

    def start(self) -> None:
        self.subscription = unique_subscription_name(f"inference-{self.model_topic}")
        self._thread = threading.Thread(target=self._run, name="model-reloader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and the stream, and delete this process's subscription."""
        self._stopping.set()
        self._inbox.put(_WAKE)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._future is not None:
            self._future.cancel()
            # Cancelled, or the stream had already failed: either way it is over.
            with contextlib.suppress(Exception):
                self._future.result(timeout)
        if self.subscription is not None:
            try:
                self.bus.delete_subscription(self.subscription)
            except Exception as error:
                log.warning("could not delete subscription %s: %s", self.subscription, error)

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        now = time.monotonic()
        next_subscribe = next_reconcile = now
        while not self._stopping.is_set():
            if self._future is None and now >= next_subscribe:
                if self._subscribe():
                    next_reconcile = now  # whatever was broadcast before is in current.json
                else:
                    next_subscribe = now + self.reconcile_seconds / 4
            deadline = next_reconcile
            if self._future is None:
                deadline = min(deadline, next_subscribe)
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if self._stopping.is_set():
                break
            if isinstance(item, ModelUpdate) and not self._on_update(item):
                next_reconcile = min(next_reconcile, time.monotonic() + self._backoff())
            now = time.monotonic()
            if now >= next_reconcile:
                healthy = self._reconcile()
                next_reconcile = now + (self.reconcile_seconds if healthy else self._backoff())

    def _backoff(self) -> float:
        """0.5 s, 1 s, 2 s, ... up to the reconcile period, growing with consecutive failures."""
        return min(self.reconcile_seconds, RETRY_FIRST_SECONDS * 2 ** min(self._failures, 16))

    # -- triggers ---------------------------------------------------------------------

    def _subscribe(self) -> bool:
        assert self.subscription is not None
        try:
            try:
                self._ensure_subscription()
            except gexc.NotFound:
                # No topic yet: only in a local stack where nothing created it (in the
                # cloud Terraform does, and this process may not create topics).
                self.bus.ensure_topic(self.model_topic)
                self._ensure_subscription()
            future = self.bus.subscribe(self.subscription, self._on_message, max_messages=10)
        except Exception as error:
            log.warning("cannot subscribe to %s (will retry): %s", self.model_topic, error)
            return False
        future.add_done_callback(self._on_stream_end)
        self._future = future
        log.info("listening for model updates on %s", self.subscription)
        return True

    def _ensure_subscription(self) -> None:
        assert self.subscription is not None
        self.bus.ensure_subscription(
            self.model_topic, self.subscription, expiration_ttl_seconds=SUBSCRIPTION_TTL_SECONDS
        )

    def _on_stream_end(self, future: StreamingPullFuture) -> None:
        """The stream died (not by `stop`): subscribe again from the loop."""
        if self._stopping.is_set():
            return
        try:
            error: BaseException | None = future.exception()
        except CancelledError:
            error = None
        log.warning("model-update stream ended (%s); subscribing again", error)
        self._future = None
        self._inbox.put(_WAKE)

    def _on_message(self, received: Received) -> None:
        """Runs on the client's callback thread: parse and hand over (then acked)."""
        update, _ = parse_or_reject(received, parse_model_update)
        if update is None:
            metrics.MODEL_UPDATES.labels("rejected").inc()
        else:
            self._inbox.put(update)

    def _on_update(self, update: ModelUpdate) -> bool:
        """Handle a broadcast; False if loading it failed."""
        current = self.holder.current
        trigger = "broadcast"
        if current is not None and update.version == current.version:
            metrics.MODEL_UPDATES.labels("duplicate").inc()
            return True
        if current is not None and update.version < current.version:
            try:
                promoted = self.registry.current_version()
            except Exception as error:
                return self._failed(update.version, error)
            if promoted != update.version:
                log.info("ignoring update to %s, older than %s", update.version, current.version)
                metrics.MODEL_UPDATES.labels("older").inc()
                return True
            trigger = "rollback"
        metrics.MODEL_UPDATES.labels("load").inc()
        return self._load(update.version, update.sha256, trigger)

    def _reconcile(self) -> bool:
        """Load the version `current.json` names if it is not the one served."""
        try:
            promoted = self.registry.current_version()
        except Exception as error:
            return self._failed("current.json", error)
        current = self.holder.current
        if promoted is None:
            if current is None:
                log.info("no promoted model in the registry yet")
                self._failures += 1  # poll less often while the learner has not published
            return current is not None
        if current is not None and promoted == current.version:
            return True
        return self._load(promoted, None, "startup" if current is None else "reconcile")

    def _load(self, version: str, sha256: str | None, trigger: str) -> bool:
        started = time.perf_counter()
        try:
            loaded = self.loader.load(version, sha256)
        except Exception as error:
            return self._failed(version, error)
        previous = self.holder.swap(loaded)
        seconds = time.perf_counter() - started
        metrics.MODEL_LOAD_SECONDS.observe(seconds)
        metrics.record_swap(
            previous.version if previous else None, version, loaded.loaded_at_unix, trigger
        )
        self._failures = 0
        log.info(
            "serving model %s (%s, loaded in %.2f s, was %s)",
            version,
            trigger,
            seconds,
            previous.version if previous else None,
            extra={"model_version": version, "trigger": trigger},
        )
        return True

    def _failed(self, what: str, error: Exception) -> bool:
        reason = failure_reason(error)
        self._failures += 1
        metrics.RELOAD_FAILURES.labels(reason).inc()
        serving = self.holder.current.version if self.holder.current else None
        log.error(
            "loading %s failed (%s: %s); still serving %s, retrying",
            what,
            reason,
            error,
            serving,
            extra={"reason": reason},
        )
        return False
