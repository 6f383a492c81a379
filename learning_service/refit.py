"""Refits: when to fit, fitting in a worker process, the promotion gate, the commit.

One thread schedules and runs fits one at a time; the fit itself runs in a
spawned worker process, so the ingest loop never waits for it or competes
with it for the GIL. A fit starts when `refit_every` accepted samples arrived
since the last one (or on request), at most once per `min_fit_interval`.
A fit triggered the moment the threshold is crossed trains on exactly the
samples up to it; samples beyond, or arriving during a fit, count toward the
next one, which trains on everything stored when it starts (so a flood is
absorbed in a few large fits rather than lagging behind in small ones).

The candidate is scored on the fixed test set and gated (`learning_service.gate`)
against the best model ever promoted on that test set: a fixed total budget
on F1 macro, a floor per well-supported test tag and per new tag. Every
candidate is stored in the registry with its decision and each rule's
verdict; a promoted one also moves `current.json` and is broadcast. The
registry signs both with the learner's key and verifies what it reads, so the
model the gate compares with is always one the learner signed: the best is
chosen among signed metadata only, and when there is none on this test set
the baseline is current.json's version if pointer and metadata verify, else
the learner's own current model; an unsigned or forged `current.json` (or
metadata) is refused and counted, so a forgery can neither raise the bar nor
stop learning. Registry calls are retried with backoff while ingestion goes
on; the data is durable, so nothing is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from learning_service.broadcast import Broadcaster
from learning_service.config import LearnerSettings
from learning_service.fit_worker import FitWorker
from learning_service.gate import best_promoted, gate
from learning_service.metrics import LearnerMetrics
from learning_service.retry import Stopped, retry
from learning_service.store import FeedbackStore
from learning_service.training import (
    Corpus,
    fit_candidate,
    score_bundle,
    training_corpus,
)
from learning_service.validated import score_candidate, split_training
from tagloop.channels.registry import (
    Registry,
    RegistryError,
    Untrusted,
    VersionNotFound,
    new_version,
)
from tagloop.domain.messages import ModelUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")

PROMOTE_LOCK_TIMEOUT = 10.0


class Busy(RuntimeError):
    """A candidate is being committed right now; try again shortly."""


def fit_snapshot(
    stored: int, mark: int, refit_every: int, *, requested: bool, backlog: bool
) -> int | None:
    """How many feedback rows the next fit trains on; None while no fit is due.

    `mark`: rows the previous fit started with. `requested`: a retrain or the
    bootstrap asked for everything. `backlog`: the fit was held back (by the
    previous fit or the minimum interval), so it takes everything stored;
    otherwise it was triggered by crossing the threshold and takes exactly
    the samples up to it.
    """
    if requested:
        return stored
    if stored - mark < refit_every:
        return None
    return stored if backlog else mark + refit_every


def _timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Refitter(threading.Thread):
    """Schedules, runs and commits fits; also the learner's view of the current model."""

    def __init__(
        self,
        settings: LearnerSettings,
        store: FeedbackStore,
        registry: Registry,
        broadcaster: Broadcaster,
        metrics: LearnerMetrics,
        bootstrap: Corpus,
        test: Corpus,
        stop: threading.Event,
        worker: FitWorker | None = None,
    ) -> None:
        super().__init__(name="refitter", daemon=True)
        self.settings = settings
        self.store = store
        self.registry = registry
        self.broadcaster = broadcaster
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.test = test
        self.test_digest = test.digest()
        self.bootstrap_tags = bootstrap.vocabulary()
        self.stop = stop
        self.work_dir = settings.data_dir / "work"
        self._wake = threading.Condition()
        self._commit_lock = threading.Lock()
        self.worker = worker or FitWorker()
        # Guarded by _wake:
        self.loaded = False
        self.mark = 0  # feedback rows the last fit started with
        self.fit_in_progress = False
        self.current: dict[str, Any] | None = None
        self.last_decision: dict[str, Any] | None = None
        # The best promoted version's metadata; read from the registry once at start-up and
        # kept up to date on promotion, so a commit does not re-read every version.
        self._best_promoted: Mapping[str, Any] | None = None
        self._needs_bootstrap = False
        self._retrain_requested = False
        self._last_start: float | None = None
        # Takes a candidate that passed the gate into a staged rollout (True) instead of
        # making it current at once; the Learner plugs in Rollout.begin.
        self.stage_candidate: Callable[[dict[str, Any]], bool] = lambda _metadata: False

    # --- called from other threads --------------------------------------------

    def notify(self) -> None:
        """New samples were stored (or the learner is stopping): re-check the schedule."""
        with self._wake:
            self._wake.notify()

    def request_retrain(self) -> float:
        """Ask for a fit on everything stored; returns the seconds until it may start."""
        with self._wake:
            self._retrain_requested = True
            self._wake.notify()
            return max(0.0, self._seconds_until_allowed())

    def samples_since_fit(self) -> int:
        with self._wake:
            return len(self.store) - self.mark

    def promote(self, version: str, label: str = "manual") -> dict[str, Any]:
        """Roll back or forward to a stored version: current.json, gauges, broadcast."""
        if not self._commit_lock.acquire(timeout=PROMOTE_LOCK_TIMEOUT):
            raise Busy("a candidate is being committed; try again")
        try:
            metadata = self.registry.promote(version)
            self._became_current(metadata, label)
        finally:
            self._commit_lock.release()
        with self._wake:
            self.last_decision = self._decision_summary(metadata)
        return metadata

    # --- the thread -------------------------------------------------------------

    def run(self) -> None:
        try:
            self.worker.start()  # its imports overlap reading the registry
            self._load_state()
            while True:
                snapshot, trigger = self._next_fit()
                self._fit(snapshot, trigger)
        except Stopped:
            log.info("refitter stopped")
        finally:
            self.worker.shutdown()

    def _retry(self, operation: str, action: Callable[[], T]) -> T:
        return retry(operation, action, self.stop, self.metrics.retries)

    def _load_state(self) -> None:
        """Where the last run left off: the current model and the feedback its successor needs."""
        shutil.rmtree(self.work_dir, ignore_errors=True)  # candidates of a crashed run
        self.work_dir.mkdir(parents=True)
        versions = self._retry("registry.list_versions", self.registry.list_versions)
        by_name = {meta["version"]: meta for meta in versions}
        current = self._retry("registry.current_version", lambda: self._signed_current(by_name))
        self._best_promoted = best_promoted(versions, self.test_digest)
        latest_rows = versions[-1].get("feedback_rows", 0) if versions else 0
        with self._wake:
            self.mark = min(latest_rows if isinstance(latest_rows, int) else 0, len(self.store))
            self._needs_bootstrap = current is None
            self.loaded = True
        if current is not None:
            metadata = by_name[current]
            with self._wake:
                self.current = metadata
            self.metrics.set_current_model(
                current, metadata.get("metrics", {}), _timestamp(metadata["created_at"])
            )
        self._warm_up()
        log.info(
            "current model %s; %d of %d feedback rows not yet in a fit",
            current or "none (bootstrapping)",
            len(self.store) - self.mark,
            len(self.store),
        )

    def _signed_current(self, verified: Mapping[str, dict[str, Any]]) -> str | None:
        """At start-up: current.json's version if it and its metadata verify (`verified`: every
        version whose signed metadata list_versions read). Otherwise the newest version the
        learner signed as promoted, and current.json is rewritten (signed) to name it."""
        try:
            current = self.registry.current_version()
        except Untrusted as error:
            self._refused(error)
        else:
            if current is None or current in verified:
                return current
            self._refused(Untrusted("unsigned", f"current.json names {current}, unverified"))
        promoted = [
            version
            for version, metadata in verified.items()
            if metadata.get("decision", {}).get("promoted") is True
        ]
        if not promoted:
            return None
        restored = max(promoted)
        log.warning("restoring a signed current.json naming %s", restored)
        self.registry.set_current(restored)
        return restored

    def _refused(self, error: Untrusted) -> None:
        self.metrics.model_refusals.labels(error.reason).inc()
        log.error("refused a registry object: %s", error, extra={"reason": error.reason})

    def _seconds_until_allowed(self) -> float:
        if self._last_start is None:
            return 0.0
        return self._last_start + self.settings.min_fit_interval_seconds - time.monotonic()

    def _next_fit(self) -> tuple[int, str]:
        """Wait until a fit is due and allowed; returns (feedback rows to use, trigger)."""
        with self._wake:
            backlog = True  # due already: samples that piled up during the last fit or a wait
            while not self.stop.is_set():
                requested = self._needs_bootstrap or self._retrain_requested
                snapshot = fit_snapshot(
                    len(self.store),
                    self.mark,
                    self.settings.refit_every,
                    requested=requested,
                    backlog=backlog,
                )
                if snapshot is None:
                    backlog = False
                    self._wake.wait()
                    continue
                wait = self._seconds_until_allowed()
                if wait > 0:
                    backlog = True
                    self._wake.wait(wait)
                    continue
                trigger = "samples"
                if requested:
                    trigger = "bootstrap" if self._needs_bootstrap else "retrain"
                self._retrain_requested = False
                return snapshot, trigger
        raise Stopped("refit")

    def _fit(self, snapshot: int, trigger: str) -> None:
        data = training_corpus(
            self.bootstrap,
            self.store.rows(snapshot),
            self.settings.new_tag_min_support,
            self.settings.new_tag_min_annotators,
            self.settings.training_window,
        )
        train, validated = split_training(
            data.train, self.store.rows(snapshot), self.settings.data_dir
        )
        data = dataclasses.replace(data, train=train)
        version = new_version()
        with self._wake:
            self.mark = snapshot
            self._last_start = time.monotonic()
            self.fit_in_progress = True
        self.metrics.fit_in_progress.set(1)
        work = Path(tempfile.mkdtemp(prefix=f"{version}-", dir=self.work_dir))
        log.info(
            "fitting candidate %s on %d rows (%d feedback rows, trigger: %s)",
            version,
            len(train),
            snapshot,
            trigger,
            extra={"version": version, "training_rows": len(train), "trigger": trigger},
        )
        try:
            started = time.monotonic()
            try:
                candidate = self.worker.call(
                    fit_candidate,
                    data,
                    self.bootstrap_tags,
                    self.test,
                    str(work),
                    {
                        "version": version,
                        "trigger": trigger,
                        "feedback_rows": snapshot,
                        "training_window": self.settings.training_window,
                        "held_back_tags": len(data.held_back),
                        "new_tag_slice_rows": len(data.new_tag_slice),
                        "test_data_sha256": self.test_digest,
                    },
                    self.settings.fit_jobs,
                )
                candidate["validated"] = self.worker.call(
                    score_candidate, str(work), candidate["sha256"], validated
                )
            except (Stopped, BrokenProcessPool):
                raise
            except Exception:
                log.exception("fitting candidate %s failed", version)
                self.metrics.fit_failures.inc()
                return
            self.metrics.fit_duration.observe(time.monotonic() - started)
            self._commit(version, work, candidate)
        except BrokenProcessPool:
            if self.stop.is_set():
                raise Stopped("fit") from None
            log.exception("the fit worker died while fitting %s", version)
            self.metrics.fit_failures.inc()
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with self._wake:
                self.fit_in_progress = False
            self.metrics.fit_in_progress.set(0)

    def _warm_up(self) -> None:
        """Wait for the worker's start, so that the first fit does not pay for it."""
        try:
            self.worker.ready()
        except BrokenProcessPool:
            if self.stop.is_set():
                raise Stopped("warm-up") from None
            log.exception("the fit worker died while starting; the next fit starts another")

    def _commit(self, version: str, work: Path, candidate: dict[str, Any]) -> None:
        """Gate against the best promoted model, store the candidate, maybe promote it."""
        with self._commit_lock:
            baseline = self._retry("registry.current_version", self._baseline)
            current = baseline["version"] if baseline else None
            best_version, best = self._best(baseline)
            verdict = gate(candidate, best, self.settings.gate_rules)
            decision = verdict.as_metadata(best_version)
            metadata = {**candidate, "parent_version": current, "decision": decision}
            self._retry("registry.put_version", lambda: self._put_once(version, work, metadata))
            if verdict.promoted:
                if not self.stage_candidate(metadata):  # staged rollout (learning_service.rollout)
                    self._retry("registry.set_current", lambda: self.registry.set_current(version))
                    self._became_current(metadata, verdict.label)
            else:
                self.metrics.rejections.labels(verdict.label).inc()
        log.info(
            "candidate %s %s: %s",
            version,
            "promoted" if decision["promoted"] else "rejected",
            decision["reason"],
            extra={"version": version, "decision": decision, "metrics": candidate["metrics"]},
        )
        with self._wake:
            self.last_decision = self._decision_summary(metadata)

    def _put_once(self, version: str, work: Path, metadata: dict[str, Any]) -> str:
        """put_version, treating "already stored by an attempt whose answer was lost" as done."""
        try:
            return self.registry.put_version(version, work, metadata)
        except RegistryError:
            try:
                stored = self.registry.get_metadata(version)
            except VersionNotFound:
                raise
            if stored.get("sha256") != metadata["sha256"]:
                raise
            return self.registry.artifact_uri(version)

    def _baseline(self) -> dict[str, Any] | None:
        """The signed metadata of the model a candidate must not fall behind: current.json's
        version when the pointer and the metadata verify, else the learner's own current."""
        try:
            current = self.registry.current_version()
            return None if current is None else self.registry.get_metadata(current)
        except Untrusted as error:
            self._refused(error)
            with self._wake:
                return self.current

    def _best(self, baseline: Mapping[str, Any] | None) -> tuple[str | None, dict[str, Any] | None]:
        """The version to gate against and its evaluation, from signed metadata only: the best
        promoted one on this test set; if there is none (the test set changed), the signed
        baseline, re-scored."""
        best = self._best_promoted
        if best is not None:
            return best["version"], dict(best)
        if baseline is None:
            return None, None
        return baseline["version"], self._rescored(baseline)

    def _rescored(self, metadata: Mapping[str, Any]) -> dict[str, Any] | None:
        """A model's evaluation on this test set (it was measured on another one)."""
        version = metadata["version"]
        log.info("test set changed since %s was scored: re-scoring it", version)
        bundle = Path(tempfile.mkdtemp(prefix=f"current-{version}-", dir=self.work_dir))

        def fetch() -> bool:
            try:
                self.registry.fetch(version, bundle)
            except Untrusted as error:
                self._refused(error)
                return False
            return True

        try:
            if not self._retry("registry.fetch", fetch):
                return None
            return self.worker.call(score_bundle, str(bundle), metadata["sha256"], self.test)
        except (Stopped, BrokenProcessPool):
            raise
        except Exception:
            log.exception("current model %s cannot be scored; gating against nothing", version)
            return None
        finally:
            shutil.rmtree(bundle, ignore_errors=True)

    def _became_current(self, metadata: dict[str, Any], label: str) -> None:
        version = metadata["version"]
        metrics = metadata.get("metrics", {})
        known = [meta for meta in (self._best_promoted, metadata) if meta is not None]
        self._best_promoted = best_promoted(known, self.test_digest)
        with self._wake:
            self.current = metadata
            self._needs_bootstrap = False
        self.metrics.set_current_model(version, metrics, time.time())
        self.metrics.promotions.labels(label).inc()
        self.broadcaster.announce(
            ModelUpdate(
                version=version,
                artifact_uri=self.registry.artifact_uri(version),
                sha256=metadata["sha256"],
                created_at=metadata["created_at"],
                metrics={
                    name: value
                    for name, value in metrics.items()
                    if isinstance(value, int | float) and not isinstance(value, bool)
                },
            )
        )

    @staticmethod
    def _decision_summary(metadata: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "version": metadata["version"],
            **metadata["decision"],
            "f1_macro": metadata.get("metrics", {}).get("f1_macro"),
        }
