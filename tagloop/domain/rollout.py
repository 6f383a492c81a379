"""Rollout stages of a promoted candidate: the signed record, its stages, the canary split.

A candidate that passed the offline gate is not served at once: it runs in
`shadow` (predicted beside the served model on every replica, never shown),
then `canary` (shown for a fixed share of titles), then `full` (current.json
names it). It ends `rolled_back` instead when the live evidence is against it.
The learner decides and writes `models/rollout.json`, signed like
current.json; replicas follow that record, never a broadcast alone.

The canary split hashes the normalised title with the candidate's version:
the same title always meets the same model during one rollout (a user who
retries sees the same tags), while each rollout samples a different share
of titles (one unlucky set of titles does not judge every candidate).
Shared by the learner and the replicas, so both agree on the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from tagloop.domain.text import normalize_title
from tagloop.domain.versions import InvalidVersion, check_version

_SPLIT_SPACE = 1 << 64


class Stage(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    FULL = "full"
    ROLLED_BACK = "rolled_back"

    @property
    def active(self) -> bool:
        """Whether replicas run the candidate beside the served model in this stage."""
        return self in (Stage.SHADOW, Stage.CANARY)


class InvalidRecord(ValueError):
    """A rollout record that does not have the documented shape."""


def canary_threshold(fraction: float) -> int:
    """The split point in hash space: titles hashing below it go to the candidate."""
    return round(min(1.0, max(0.0, fraction)) * _SPLIT_SPACE)


def title_point(title: str, version: str) -> int:
    """Where a title falls in [0, 2**64) for a candidate: stable across processes and runs
    (sha256, not Python's salted hash), independent of case and spacing."""
    digest = hashlib.sha256(f"{version}\n{normalize_title(title)}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def in_canary(title: str, version: str, threshold: int) -> bool:
    return title_point(title, version) < threshold


@dataclass(frozen=True)
class RolloutRecord:
    """What `models/rollout.json` says (signed with the learner's key)."""

    version: str
    """The candidate."""
    sha256: str
    """Its artifact's digest, as in its signed metadata."""
    base_version: str | None
    """The version current.json named when the rollout started."""
    stage: Stage
    canary_fraction: float
    reason: str
    issued_at: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stage": str(self.stage)}

    @classmethod
    def from_dict(cls, document: Any) -> RolloutRecord:
        if not isinstance(document, dict):
            raise InvalidRecord("a rollout record is a JSON object")
        try:
            stage = Stage(str(document.get("stage")))
            version = check_version(document.get("version"))
            base = document.get("base_version")
            base = None if base is None else check_version(base)
        except (ValueError, InvalidVersion) as error:
            raise InvalidRecord(str(error)) from None
        fraction = document.get("canary_fraction")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise InvalidRecord("canary_fraction must be a number")
        if not 0.0 <= fraction <= 1.0:
            raise InvalidRecord("canary_fraction must be within [0, 1]")
        for name in ("sha256", "reason", "issued_at"):
            if not isinstance(document.get(name), str):
                raise InvalidRecord(f"{name} must be a string")
        return cls(
            version=version,
            sha256=document["sha256"],
            base_version=base,
            stage=stage,
            canary_fraction=float(fraction),
            reason=document["reason"],
            issued_at=document["issued_at"],
        )
