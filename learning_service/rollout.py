"""The learner's side of staged rollout: start, evidence, stage changes, records, broadcasts.

A candidate that passed the gate starts in shadow (`begin`, from the refit
commit) instead of moving current.json. This thread then loads the served
(base) and candidate models, scores both on every correction the ingest loop
stores (`observe`; rollout_policy explains the evidence and the rules), and
applies what `decide` says. Operators change stages through the admin API
(`set_stage`), and a manual promotion ends any rollout (`promote`).

Every change is written to the registry first (signed: the version's stage
history, then models/rollout.json, which replicas follow), then broadcast
as a hint. `full` moves current.json to the candidate through the refitter,
exactly like a promotion; `rolled_back` also rewrites the candidate's
decision to "not promoted", so `tagloop models rollback` never returns to it.
Evidence lives in memory: after a learner restart an active stage gathers
its evidence again (the record, and so what replicas do, is unchanged).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from learning_service.broadcast import Broadcaster
from learning_service.retry import Stopped, retry
from learning_service.rollout_policy import Evidence, RolloutSettings, decide
from learning_service.store import StoredFeedback
from tagloop.channels.registry import CorruptObject, Registry, Untrusted, VersionNotFound
from tagloop.domain.messages import StageChange, utc_now
from tagloop.domain.rollout import RolloutRecord, Stage

if TYPE_CHECKING:  # scikit-learn: loaded with the first rollout, not at the learner's start
    from tagloop.domain.model import TagModel

log = logging.getLogger(__name__)


class StageConflict(ValueError):
    """A stage change that makes no sense for the rollout as it stands (answered 409)."""


TRIGGERS = ("gate", "evidence", "manual")
"""What can change a rollout's stage: a gate pass, live evidence, an operator."""

DURING_ROLLOUT = frozenset(
    {
        "tagloop_rollout_stage",
        "tagloop_rollout_corrections",
        "tagloop_rollout_online_precision",
        "tagloop_rollout_online_recall",
        "tagloop_rollout_agreement",
    }
)
"""Series labelled by the candidate's version: they exist only while a rollout has one."""


class RolloutMetrics:
    """Stage and online quality per version in rollout: only the base and the candidate are
    ever labelled, and the labels are cleared when a rollout ends or another starts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage = Gauge(
            "tagloop_rollout_stage",
            "1 for the candidate's current stage (shadow, canary, full, rolled_back).",
            ["model_version", "stage"],
            registry=registry,
        )
        self.changes = Counter(
            "tagloop_rollout_stage_changes",
            "Rollout stage changes, by new stage and trigger (gate, evidence, manual).",
            ["stage", "trigger"],
            registry=registry,
        )
        # Every (stage, trigger) series from 0, so increase() sees the first change too.
        for stage in Stage:
            for trigger in TRIGGERS:
                self.changes.labels(str(stage), trigger)
        self.corrections = Gauge(
            "tagloop_rollout_corrections",
            "Corrections scored for both models in the current stage.",
            ["model_version", "stage"],
            registry=registry,
        )
        self.precision = Gauge(
            "tagloop_rollout_online_precision",
            "Precision on the current stage's corrections, by model version and role "
            "(base: the served model, candidate).",
            ["model_version", "stage", "role"],
            registry=registry,
        )
        self.recall = Gauge(
            "tagloop_rollout_online_recall",
            "Recall on the current stage's corrections, by model version and role.",
            ["model_version", "stage", "role"],
            registry=registry,
        )
        self.agreement = Gauge(
            "tagloop_rollout_agreement",
            "Mean Jaccard agreement of candidate and served tags on the stage's corrections.",
            ["model_version", "stage"],
            registry=registry,
        )

    def changed(self, record: RolloutRecord, trigger: str) -> None:
        for gauge in (self.stage, self.corrections, self.precision, self.recall, self.agreement):
            gauge.clear()
        self.stage.labels(record.version, str(record.stage)).set(1)
        self.changes.labels(str(record.stage), trigger).inc()

    def observed(self, record: RolloutRecord, evidence: Evidence) -> None:
        stage = str(record.stage)
        self.corrections.labels(record.version, stage).set(evidence.corrections)
        roles = (
            (record.base_version, "base", evidence.base),
            (record.version, "candidate", evidence.candidate),
        )
        for version, role, score in roles:
            precision, recall = score.precision(), score.recall()
            if version is not None and precision is not None and recall is not None:
                self.precision.labels(version, stage, role).set(precision)
                self.recall.labels(version, stage, role).set(recall)
        agreement = evidence.agreement()
        if agreement is not None:
            self.agreement.labels(record.version, stage).set(agreement)


class Rollout(threading.Thread):
    """Owns the rollout record; one thread scores evidence and applies automatic changes."""

    def __init__(
        self,
        settings: RolloutSettings,
        registry: Registry,
        broadcaster: Broadcaster,
        make_current: Callable[[str, str], dict[str, Any]],
        work_dir: Path,
        metrics_registry: CollectorRegistry,
        retries: Counter,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="rollout", daemon=True)
        self.settings = settings
        self.registry = registry
        self.broadcaster = broadcaster
        self.make_current = make_current
        self.work_dir = work_dir
        self.metrics = RolloutMetrics(metrics_registry)
        self.retries = retries
        self.stop = stop
        self._wake = threading.Condition()
        self._change = threading.RLock()  # serialises registry writes of stage changes
        # Guarded by _wake:
        self.record: RolloutRecord | None = None
        self.evidence = Evidence()
        self._models: tuple[str, TagModel, TagModel] | None = None  # (candidate, base, cand.)
        self._rows: list[StoredFeedback] = []
        self._starts: list[tuple[dict[str, Any], str]] = []
        self._fresh = False  # a stage began: evaluate it even before any correction

    # --- called from other threads -------------------------------------------------

    def begin(self, metadata: dict[str, Any]) -> bool:
        """The refit hook for a candidate that passed the gate: True if it starts in shadow
        (this thread records it), False if it should become current at once (stages off, or
        nothing current to compare with)."""
        if not self.settings.enabled or metadata.get("parent_version") is None:
            return False
        reason = f"passed the gate ({metadata['decision']['reason']}): shadow first"
        with self._wake:
            self._starts.append((metadata, reason))
            self._wake.notify()
        return True

    def observe(self, rows: list[StoredFeedback]) -> None:
        """The ingest hook: corrections just stored (scored by this thread, never here)."""
        with self._wake:
            if self.record is not None and self.record.stage.active and rows:
                self._rows.extend(rows)
                self._wake.notify()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def status(self) -> dict[str, Any]:
        with self._wake:
            record, evidence = self.record, self.evidence.summary()
        return {
            "enabled": self.settings.enabled,
            "settings": vars(self.settings),
            "rollout": None if record is None else record.to_dict(),
            "evidence": evidence if record is not None and record.stage.active else None,
        }

    def set_stage(self, version: str, stage: Stage, reason: str) -> RolloutRecord:
        """An operator's change. Shadow or canary for a version not in rollout starts one
        (ending another); other changes need `version` to be the active candidate."""
        with self._change:
            active = self._active()
            if active is not None and active.version == version:
                if active.stage is stage:
                    raise StageConflict(f"{version} is already in {stage}")
                return self._move(active, stage, reason, "manual")
            if stage.active:
                metadata = self.registry.get_metadata(version)
                return self._start(metadata, stage, reason, "manual")
            raise StageConflict(
                f"{version} is not in rollout: start it in shadow or canary, or promote it"
            )

    def promote(self, version: str) -> dict[str, Any]:
        """A manual promotion: ends any rollout (the candidate itself goes to full)."""
        with self._change:
            active = self._active()
            if active is not None and active.version == version:
                self._move(active, Stage.FULL, "promoted by an operator", "manual")
                return self.registry.get_metadata(version)
            if active is not None:
                reason = f"superseded: an operator promoted {version}"
                self._move(active, Stage.ROLLED_BACK, reason, "manual")
            return self.make_current(version, "manual")

    # --- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            record = self._retry("registry.rollout_record", self._signed_record)
            with self._wake:
                if self.record is None and record is not None:
                    self.record = record
                    log.info("resuming the rollout of %s in %s", record.version, record.stage)
            while True:
                self._step()
        except Stopped:
            log.info("rollout stopped")

    def _signed_record(self) -> RolloutRecord | None:
        """The record to resume; an unsigned or forged one is logged and ignored (the next
        stage change overwrites it with a signed one)."""
        try:
            return self.registry.rollout_record()
        except (Untrusted, CorruptObject) as error:
            log.error("ignoring models/rollout.json: %s", error)
            return None

    def _step(self) -> None:
        with self._wake:
            while not self.stop.is_set() and not self._due():
                self._wake.wait()
            if self.stop.is_set():
                raise Stopped("rollout")
            starts, self._starts = self._starts, []
            rows, self._rows = self._rows, []
            fresh, self._fresh = self._fresh, False
            record = self.record
            loaded = self._models
        for metadata, reason in starts:  # each supersedes the one before (rolled back)
            with self._change:
                self._retry("rollout.start", partial(self._start, metadata, Stage.SHADOW, reason))
        if starts:
            return
        if record is None or not record.stage.active:
            return
        if loaded is None or loaded[0] != record.version:
            self._load(record)
            with self._wake:
                self._rows[:0] = rows  # scored once the models are there
                self._fresh = self._fresh or fresh
            return
        self._score(record, loaded, rows)

    def _due(self) -> bool:
        record = self.record
        if self._starts:
            return True
        if record is None or not record.stage.active:
            return False
        loaded = self._models is not None and self._models[0] == record.version
        return not loaded or bool(self._rows) or self._fresh

    def _load(self, record: RolloutRecord) -> None:
        """Fetch the base and candidate models (verified by the registry) for scoring."""
        from tagloop.domain.bundle import load_bundle

        self.work_dir.mkdir(parents=True, exist_ok=True)

        def fetch(version: str) -> TagModel:
            bundle = Path(tempfile.mkdtemp(prefix=f"{version}-", dir=self.work_dir))
            try:
                self.registry.fetch(version, bundle)
                return load_bundle(bundle)[0]
            finally:
                shutil.rmtree(bundle, ignore_errors=True)

        base_version = record.base_version or record.version
        base = self._retry("rollout.load_base", lambda: fetch(base_version))
        candidate = self._retry("rollout.load_candidate", lambda: fetch(record.version))
        with self._wake:
            self._models = (record.version, base, candidate)
        log.info("scoring corrections for %s against %s", record.version, base_version)

    def _score(
        self,
        record: RolloutRecord,
        loaded: tuple[str, TagModel, TagModel],
        rows: list[StoredFeedback],
    ) -> None:
        titles = [row.title for row in rows]
        base = loaded[1].predict_tag_sets(titles) if titles else []
        candidate = loaded[2].predict_tag_sets(titles) if titles else []
        with self._wake:
            if self.record != record:
                return  # the stage changed while scoring: this evidence belongs to no stage
            for row, base_tags, candidate_tags in zip(rows, base, candidate, strict=True):
                self.evidence.add(base_tags, candidate_tags, row.tags)
            evidence = self.evidence
            self.metrics.observed(record, evidence)
            decision = decide(record.stage, evidence, self.settings)
        if decision is None:
            return
        stage, reason = decision
        with self._change:
            if self._active() == record:
                self._retry("rollout.change", lambda: self._move(record, stage, reason, "evidence"))

    # --- stage changes (hold self._change) --------------------------------------------

    def _active(self) -> RolloutRecord | None:
        with self._wake:
            record = self.record
        return record if record is not None and record.stage.active else None

    def _start(
        self, metadata: dict[str, Any], stage: Stage, reason: str, trigger: str = "gate"
    ) -> RolloutRecord:
        version = metadata["version"]
        active = self._active()
        if active is not None and active.version != version:
            self._move(active, Stage.ROLLED_BACK, f"superseded by {version}", trigger)
        base = self.registry.current_version()
        if base == version:
            raise StageConflict(f"{version} is already the current version")
        record = RolloutRecord(
            version=version,
            sha256=metadata["sha256"],
            base_version=base,
            stage=stage,
            canary_fraction=self.settings.canary_fraction,
            reason=reason,
            issued_at=utc_now(),
        )
        self._record(record, trigger)
        return record

    def _move(
        self, active: RolloutRecord, stage: Stage, reason: str, trigger: str
    ) -> RolloutRecord:
        if stage is Stage.FULL:
            self.make_current(active.version, "rollout")
        record = replace(active, stage=stage, reason=reason, issued_at=utc_now())
        self._record(record, trigger)
        if stage is Stage.ROLLED_BACK:
            decision = {"promoted": False, "reason": f"rolled back from {active.stage}: {reason}"}
            try:
                self.registry.set_decision(active.version, decision)
            except VersionNotFound:
                log.warning("rolled back %s, whose metadata is gone", active.version)
        return record

    def _record(self, record: RolloutRecord, trigger: str) -> None:
        """Registry first (what replicas follow), then memory, metrics and the broadcast."""
        self.registry.record_stage(record)
        with self._wake:
            self.record = record
            self.evidence = Evidence()
            self._rows = []
            self._fresh = True
            self._wake.notify()
        self.metrics.changed(record, trigger)
        self.broadcaster.announce(StageChange(record.version, str(record.stage), record.issued_at))
        log.info(
            "rollout of %s: %s (%s)",
            record.version,
            record.stage,
            record.reason,
            extra={"version": record.version, "stage": str(record.stage), "trigger": trigger},
        )

    def _retry(self, operation: str, action: Callable[[], Any]) -> Any:
        return retry(operation, action, self.stop, self.retries)
