"""`tagloop models`' pure parts: which version a rollback picks, and the listing's rows."""

from __future__ import annotations

import pytest

from tagloop.cli import _model_rows
from tagloop.learner_client import LearnerApiError, previous_promoted

OLD, MID, NEW = (
    "20261101T000000000Z-aaaaaa",
    "20261102T000000000Z-bbbbbb",
    "20261103T000000000Z-cccccc",
)


def meta(version: str, promoted: bool, **extra: object) -> dict[str, object]:
    return {"version": version, "decision": {"promoted": promoted, "reason": "r"}, **extra}


def test_rollback_skips_rejected_candidates_and_steps_back_one_promoted_version() -> None:
    versions = [meta(NEW, True), meta(MID, False), meta(OLD, True)]
    assert previous_promoted(NEW, versions) == OLD
    with pytest.raises(LearnerApiError, match="nothing to roll back to"):
        previous_promoted(OLD, versions)
    with pytest.raises(LearnerApiError, match="no model is current"):
        previous_promoted(None, versions)


def test_a_version_without_metrics_is_listed_not_a_crash() -> None:
    rows = _model_rows(NEW, [meta(NEW, True, metrics={"f1_macro": 0.5}), meta(OLD, False)])
    assert rows[1].startswith(f"* {NEW}") and "0.5000" in rows[1]
    assert rows[2].startswith(f"  {OLD}") and " - " in rows[2] and "rejected: r" in rows[2]
