"""Keeps a worker's model equal to the promoted one, in the background.

Two threads per worker process. The loader thread alone loads and swaps, so
loads never overlap; it acts on three triggers:

- `models/current.json` at start-up, and again every TAGLOOP_RECONCILE_SECONDS
  (reconciliation: catches a missed broadcast, and retries a failed load
  sooner, with backoff);
- a broadcast on the model topic, heard through a subscription of this
  process's own (every replica and worker hears every update). Anyone who
  can publish on the topic can send one, so a broadcast is only a hint: the
  worker reads the signed `current.json` and loads the version it names.
  A broadcast of a version the pointer does not name is refused (counted),
  or ignored as out-of-order delivery when it is older than the loaded
  version; when the pointer does name an older version, that is a rollback;
- the subscriber thread saying it (re)subscribed: anything broadcast before
  is in `current.json`, so it is read again.

Each trigger also syncs the rollout's candidate (inference_service.rollout):
a stage-change broadcast is a hint like a model update, and the signed
`models/rollout.json` decides, read on the same schedule as `current.json`.

The subscriber thread creates the subscription and keeps the stream alive,
so an unreachable Pub/Sub never delays loading the model from the registry.
A failed download or verification keeps the old model serving; an untrusted
pointer or bundle (unsigned, wrongly signed, a signed pointer older than one
already followed, a digest that does not match) is also counted in
`tagloop_inference_model_refusals_total` by reason.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import CancelledError

from google.cloud.pubsub_v1.subscriber.futures import StreamingPullFuture

from inference_service import metrics
from inference_service.loader import ModelLoader
from inference_service.model_holder import ModelHolder
from inference_service.rollout import CandidateFollower
from tagloop.channels.bus import Bus, Received, parse_or_reject, unique_subscription_name
from tagloop.channels.provisioning import INFERENCE_SUBSCRIPTION_PREFIX, Provisioner, PubSubFailure
from tagloop.channels.registry import IntegrityError, Pointer, Registry, RegistryError, Untrusted
from tagloop.domain.bundle import BundleError
from tagloop.domain.messages import ModelUpdate, StageChange, parse_model_message
from tagloop.domain.signing import SignatureError
from tagloop.domain.versions import InvalidVersion

log = logging.getLogger(__name__)

# Pub/Sub's shortest expiration: the subscription of a worker that died
# without deleting it disappears after a day of inactivity.
SUBSCRIPTION_TTL_SECONDS = 24 * 3600
ADMIN_TIMEOUT_SECONDS = 10.0
THREAD_JOIN_SECONDS = 3.0
RETRY_FIRST_SECONDS = 0.5
RECHECK_SECONDS = 60.0  # a permanent subscription failure (IAM, no topic): look again this often
_WAKE = object()
_RECONCILE = object()


def refusal_reason(error: BaseException) -> str | None:
    """The refusal label of an error that means "not trusted"; None for other failures."""
    if isinstance(error, SignatureError | Untrusted):
        return error.reason
    if isinstance(error, IntegrityError):
        return "digest_mismatch"
    if isinstance(error, InvalidVersion):
        return "invalid_version"
    return None


def failure_reason(error: BaseException) -> str:
    """A bounded label for the failure metric."""
    if isinstance(error, IntegrityError):
        return "integrity"
    if isinstance(error, SignatureError | Untrusted | InvalidVersion):
        return "untrusted"
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
        provision: bool = True,
    ) -> None:
        self.bus, self.registry, self.loader, self.holder = bus, registry, loader, holder
        self.provisioner = Provisioner(bus, provision)
        # Why this process hears no broadcasts, if a permanent error says so (shown on /readyz).
        self.subscription_problem: str | None = None
        self.model_topic = model_topic
        self.reconcile_seconds = reconcile_seconds
        self.subscription: str | None = None
        self._inbox: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._stream_ended = threading.Event()
        self._future: StreamingPullFuture | None = None
        self._created = False
        self._threads: list[threading.Thread] = []
        self._failures = 0
        self._newest_pointer: str | None = None  # issued_at of the newest pointer followed
        self.candidates = CandidateFollower(registry, loader, holder)

    # -- lifecycle (call in the worker process, after fork) -------------------------

    def start(self) -> None:
        # The prefix is what the inference service account's IAM condition allows.
        self.subscription = unique_subscription_name(
            f"{INFERENCE_SUBSCRIPTION_PREFIX}{self.model_topic}"
        )
        self._threads = [
            threading.Thread(target=self._load_loop, name="model-loader", daemon=True),
            threading.Thread(target=self._subscribe_loop, name="model-subscriber", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
        """Stop both threads and the stream, and delete this process's subscription."""
        self._stopping.set()
        self._stream_ended.set()
        self._inbox.put(_WAKE)
        for thread in self._threads:
            # Bounded: a thread stuck on an unreachable Pub/Sub must not hold up the exit.
            thread.join(THREAD_JOIN_SECONDS)
        if self._future is not None:
            self._future.cancel()
            # Cancelled, or the stream had already failed: either way it is over.
            with contextlib.suppress(Exception):
                self._future.result(timeout)
        if self._created and self.subscription is not None:
            try:
                self.bus.delete_subscription(self.subscription, timeout=timeout)
            except Exception as error:  # it expires after SUBSCRIPTION_TTL_SECONDS anyway
                log.warning("could not delete subscription %s: %s", self.subscription, error)

    # -- the loader thread ----------------------------------------------------------

    def _load_loop(self) -> None:
        next_reconcile = time.monotonic()
        while not self._stopping.is_set():
            try:
                item = self._inbox.get(timeout=max(0.0, next_reconcile - time.monotonic()))
            except queue.Empty:
                item = None
            if self._stopping.is_set():
                break
            if item is _RECONCILE:
                next_reconcile = time.monotonic()
            elif isinstance(item, ModelUpdate | StageChange):
                # A new served model may be the candidate itself: the record is read either way.
                handled = not isinstance(item, ModelUpdate) or self._on_update(item)
                if not (handled and self._sync_candidate()):
                    next_reconcile = min(next_reconcile, time.monotonic() + self._backoff())
            now = time.monotonic()
            if now >= next_reconcile:
                healthy = self._reconcile() and self._sync_candidate()
                next_reconcile = now + (self.reconcile_seconds if healthy else self._backoff())

    def _backoff(self) -> float:
        """0.5 s, 1 s, 2 s, ... up to the reconcile period, growing with consecutive failures."""
        return min(self.reconcile_seconds, RETRY_FIRST_SECONDS * 2.0 ** min(self._failures, 16))

    # -- the subscriber thread ------------------------------------------------------

    def _subscribe_loop(self) -> None:
        delay = RETRY_FIRST_SECONDS
        while not self._stopping.is_set():
            wait = self._subscribe()
            if wait is None:
                delay = RETRY_FIRST_SECONDS
                self._inbox.put(_RECONCILE)
                self._stream_ended.wait()
                self._stream_ended.clear()
            else:
                self._stopping.wait(wait or delay)
                delay = min(2 * delay, self.reconcile_seconds)

    def _subscribe(self) -> float | None:
        """None once the stream runs; else seconds to wait (0: the transient backoff)."""
        if self._stopping.is_set():  # never re-create clients that `stop` is closing
            return 0.0
        assert self.subscription is not None
        try:
            self.provisioner.own_subscription(
                self.model_topic,
                self.subscription,
                SUBSCRIPTION_TTL_SECONDS,
                ADMIN_TIMEOUT_SECONDS,
            )
            self._created = True
            future = self.bus.subscribe(self.subscription, self._on_message, max_messages=10)
        except PubSubFailure as failure:
            if failure.permanent:
                # Retrying cannot fix IAM or a missing topic: say so once, look again slowly.
                # current.json reconciliation keeps the served model right meanwhile.
                if self.subscription_problem != str(failure):
                    log.error("no model-update broadcasts: %s", failure)
                self.subscription_problem = str(failure)
                return RECHECK_SECONDS
            log.warning("cannot subscribe to %s (will retry): %s", self.model_topic, failure)
            return 0.0
        except Exception as error:
            log.warning("cannot subscribe to %s (will retry): %s", self.model_topic, error)
            return 0.0
        self.subscription_problem = None
        self._future = future
        future.add_done_callback(self._on_stream_end)
        log.info("listening for model updates on %s", self.subscription)
        return None

    def _on_stream_end(self, future: StreamingPullFuture) -> None:
        """The stream is over: by `stop`, or it died and the subscriber thread starts anew."""
        if not self._stopping.is_set():
            try:
                error: BaseException | None = future.exception()
            except CancelledError:
                error = None
            log.warning("model-update stream ended (%s); subscribing again", error)
        self._stream_ended.set()

    def _on_message(self, received: Received) -> None:
        """Runs on the client's callback thread: parse and hand over (then acked)."""
        update, reason = parse_or_reject(received, parse_model_message)
        if update is None:
            metrics.MODEL_UPDATES.labels("rejected").inc()
            refused = "invalid_version" if reason == "invalid_version" else "invalid_message"
            metrics.MODEL_REFUSALS.labels(refused).inc()
        else:
            self._inbox.put(update)

    def _on_update(self, update: ModelUpdate) -> bool:
        """Handle a broadcast (a hint: the signed pointer decides); False if a load failed."""
        current = self.holder.current
        if current is not None and update.version == current.version:
            metrics.MODEL_UPDATES.labels("duplicate").inc()
            return True
        try:
            pointer = self._signed_pointer()
        except Exception as error:
            return self._failed("current.json", error)
        if pointer is not None and pointer.version == update.version:
            older = current is not None and update.version < current.version
            metrics.MODEL_UPDATES.labels("load").inc()
            return self._follow(pointer, "rollback" if older else "broadcast")
        if current is not None and update.version < current.version:
            log.info("ignoring update to %s, older than %s", update.version, current.version)
            metrics.MODEL_UPDATES.labels("older").inc()
            return True
        # Newer than what is served, yet not what the signed pointer names: forged, or
        # already overtaken by a later promotion. Either way the pointer is what counts.
        metrics.MODEL_UPDATES.labels("not_current").inc()
        metrics.MODEL_REFUSALS.labels("not_current").inc()
        log.warning(
            "refusing update to %s: the signed current.json names %s",
            update.version,
            pointer.version if pointer else None,
            extra={"model_version": update.version, "reason": "not_current"},
        )
        return True if pointer is None else self._follow(pointer, "reconcile")

    def _reconcile(self) -> bool:
        """Load the version `current.json` names if it is not the one served."""
        try:
            pointer = self._signed_pointer()
        except Exception as error:
            return self._failed("current.json", error)
        current = self.holder.current
        if pointer is None:
            if current is None:
                log.info("no promoted model in the registry yet")
                self._failures += 1  # poll less often while the learner has not published
            return current is not None
        return self._follow(pointer, "startup" if current is None else "reconcile")

    def _sync_candidate(self) -> bool:
        """Run the candidate the signed rollout record names, if any; False if that failed
        (the replica keeps what it runs and retries with backoff)."""
        try:
            self.candidates.sync()
        except Exception as error:
            return self._failed("rollout.json", error)
        return True

    def _signed_pointer(self) -> Pointer | None:
        """current.json, verified by the registry, and not older than one already followed
        (a replayed old signed pointer must not roll the replica back)."""
        pointer = self.registry.current_pointer()
        if pointer is None:
            return None
        if pointer.sha256 is None or pointer.issued_at is None:
            raise Untrusted("unsigned", "current.json carries no signed digest")
        if self._newest_pointer is not None and pointer.issued_at < self._newest_pointer:
            raise Untrusted(
                "stale_pointer",
                f"current.json was issued at {pointer.issued_at}, before the pointer already "
                f"followed ({self._newest_pointer})",
            )
        return pointer

    def _follow(self, pointer: Pointer, trigger: str) -> bool:
        """Serve what the verified pointer names (a no-op if it is served already)."""
        current = self.holder.current
        served = current is not None and pointer.version == current.version
        if not served and not self._load(pointer, trigger):
            return False
        self._newest_pointer = max(self._newest_pointer or "", pointer.issued_at or "")
        return True

    def _load(self, pointer: Pointer, trigger: str) -> bool:
        version = pointer.version
        assert pointer.sha256 is not None  # _signed_pointer refuses a pointer without one
        started = time.perf_counter()
        try:
            loaded = self.loader.load(version, pointer.sha256)
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
        refusal = refusal_reason(error)
        if refusal is not None:
            metrics.MODEL_REFUSALS.labels(refusal).inc()
            log.error(
                "refused %s as untrusted (%s): %s; still serving %s",
                what,
                refusal,
                error,
                serving,
                extra={"reason": refusal},
            )
            return False
        log.error(
            "loading %s failed (%s: %s); still serving %s, retrying",
            what,
            reason,
            error,
            serving,
            extra={"reason": reason},
        )
        return False
