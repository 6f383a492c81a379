"""A replica's side of staged rollout: the candidate beside the served model.

The learner records a candidate's stage in the signed `models/rollout.json`
(tagloop.domain.rollout). `CandidateFollower.sync` runs on the loader thread,
at start-up, on every reconciliation and on a stage-change broadcast, and
makes `holder.candidate` match the record: loaded (through the same verifying
loader as the served model) while the stage is shadow or canary, cleared
otherwise. A replica that missed a broadcast converges at its next
reconciliation, as with current.json.

`predict` answers a request:

- no candidate: the served model, as always (one extra branch);
- shadow: the served model answers, the candidate predicts the same titles
  beside it (never shown) and the agreement of the two tag sets is counted,
  which doubles model time only while a shadow runs;
- canary: each title goes to the candidate if its stable hash falls below
  the canary fraction, else to the served model; the answer names the model
  per title (and the X-Model-Version header every model that answered).

Metrics (defined in inference_service.metrics) are labelled by model version
and stage (full for the served model), so only the served and the candidate
versions ever appear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from inference_service import metrics
from inference_service.loader import ModelLoader
from inference_service.model_holder import LoadedModel, ModelHolder
from tagloop.channels.registry import Registry, Untrusted
from tagloop.domain.model import Prediction
from tagloop.domain.rollout import RolloutRecord, Stage, canary_threshold, in_canary

log = logging.getLogger(__name__)

SERVED_STAGE = "full"


@dataclass(frozen=True)
class Candidate:
    """A loaded candidate and how it is used (immutable: swapped whole, like LoadedModel)."""

    loaded: LoadedModel
    stage: Stage
    threshold: int
    """tagloop.domain.rollout.canary_threshold of the record's fraction."""
    issued_at: str

    @property
    def version(self) -> str:
        return self.loaded.version


def _timed(
    loaded: LoadedModel, stage: str, titles: Sequence[str], alternatives: int | None
) -> list[Prediction]:
    started = time.perf_counter()
    predictions = loaded.model.predict(titles, alternatives)
    metrics.model_seconds(loaded.version, stage)(time.perf_counter() - started)
    metrics.predictions(loaded.version, stage)(len(titles))
    return predictions


def predict(
    served: LoadedModel,
    candidate: Candidate | None,
    titles: list[str],
    alternatives: int | None = None,
) -> tuple[list[Prediction], list[str]]:
    """The predictions shown for `titles` and the version that made each one
    (`alternatives`: as `TagModel.predict`'s)."""
    if candidate is None:
        return _timed(served, SERVED_STAGE, titles, alternatives), [served.version] * len(titles)
    if candidate.stage is Stage.SHADOW:
        shown = _timed(served, SERVED_STAGE, titles, alternatives)
        shadow = _timed(candidate.loaded, "shadow", titles, alternatives)
        _compare(candidate.version, shown, shadow)
        return shown, [served.version] * len(titles)
    chosen = [in_canary(title, candidate.version, candidate.threshold) for title in titles]
    to_canary = [title for title, canary in zip(titles, chosen, strict=True) if canary]
    to_served = [title for title, canary in zip(titles, chosen, strict=True) if not canary]
    canary = iter(_timed(candidate.loaded, "canary", to_canary, alternatives) if to_canary else [])
    rest = iter(_timed(served, SERVED_STAGE, to_served, alternatives) if to_served else [])
    predictions = [next(canary) if c else next(rest) for c in chosen]
    return predictions, [candidate.version if c else served.version for c in chosen]


def _compare(version: str, shown: list[Prediction], shadow: list[Prediction]) -> None:
    total = 0.0
    for served, candidate in zip(shown, shadow, strict=True):
        a, b = set(served.tags), set(candidate.tags)
        total += len(a & b) / len(a | b) if a | b else 1.0
    metrics.SHADOW_COMPARED.labels(version).inc(len(shown))
    metrics.SHADOW_AGREEMENT.labels(version).inc(total)


class CandidateFollower:
    """Keeps `holder.candidate` equal to what the signed rollout record says (loader thread)."""

    def __init__(self, registry: Registry, loader: ModelLoader, holder: ModelHolder) -> None:
        self.registry, self.loader, self.holder = registry, loader, holder
        self._newest: str | None = None  # issued_at of the newest record followed

    def sync(self) -> str | None:
        """Follow the record; returns the candidate version now run (None: no candidate).
        Raises what the registry or loader raise (the caller counts and retries)."""
        record = self.registry.rollout_record()
        if record is None:
            self._clear()
            return None
        if self._newest is not None and record.issued_at < self._newest:
            raise Untrusted(
                "stale_record",
                f"rollout.json was issued at {record.issued_at}, before the record already "
                f"followed ({self._newest})",
            )
        served = self.holder.current
        version: str | None = None
        if not record.stage.active or (served is not None and served.version == record.version):
            self._clear()
        else:
            version = self._follow(record)
        self._newest = max(self._newest or "", record.issued_at)
        return version

    def _follow(self, record: RolloutRecord) -> str:
        previous = self.holder.candidate
        if previous is not None and previous.version == record.version:
            loaded = previous.loaded
        else:
            loaded = self.loader.load(record.version, record.sha256)
        candidate = Candidate(
            loaded, record.stage, canary_threshold(record.canary_fraction), record.issued_at
        )
        self.holder.candidate = candidate
        if previous is not None:
            metrics.CANDIDATE_INFO.labels(previous.version, str(previous.stage)).set(0)
        metrics.CANDIDATE_INFO.labels(candidate.version, str(candidate.stage)).set(1)
        if previous is None or (previous.version, previous.stage) != (record.version, record.stage):
            log.info(
                "running candidate %s in %s (%s)",
                record.version,
                record.stage,
                record.reason,
                extra={"model_version": record.version, "stage": str(record.stage)},
            )
        return record.version

    def _clear(self) -> None:
        previous = self.holder.candidate
        if previous is None:
            return
        self.holder.candidate = None
        metrics.CANDIDATE_INFO.labels(previous.version, str(previous.stage)).set(0)
        log.info("candidate %s no longer runs beside the served model", previous.version)
