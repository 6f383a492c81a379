"""The history page's view of staged rollout: the candidate, its stage, evidence and reasons.

Three exact routes beside frontend/history.py's, built the same way (each
learner request made from validated parts, every answer checked field by
field, learner errors answered 502/503 and counted):

- `GET /ui/rollout`: the learner's `GET /api/rollout` (the candidate in
  rollout or the last one, the live evidence of its stage, its stage changes).
- `GET /ui/models/<version>/stages`: one version's recorded stage changes.
- `POST /ui/models/<version>/stage` with `{"stage": ...}`: an operator's
  advance or rollback, behind the learner's admin token (passed on, never kept).

Only the documented stages, strict version ids, finite numbers and capped
text reach the page: a stage record is the learner's, but the page must not
trust that what came over the wire is one.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request

from frontend.history import (
    ask,
    bearer_token,
    finite_number,
    learner_client,
    short_text,
    valid_version,
)
from tagloop.domain.rollout import Stage
from tagloop.domain.versions import InvalidVersion, check_version
from tagloop.web.api import ApiError

log = logging.getLogger(__name__)

MAX_STAGES = 50
"""Stage changes passed on per version (a rollout has a handful; more is not the learner's)."""
PAGE_REASON = "set by an operator on the model history page"


def _stage(value: object) -> str | None:
    try:
        return str(Stage(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _fraction(value: object) -> float | None:
    number = finite_number(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


def stage_entry(record: object) -> dict[str, Any] | None:
    """One stage change as the page shows it; None without a valid version and stage."""
    if not isinstance(record, dict):
        return None
    version, stage = valid_version(record.get("version")), _stage(record.get("stage"))
    if version is None or stage is None:
        return None
    return {
        "version": version,
        "base_version": valid_version(record.get("base_version")),
        "stage": stage,
        "canary_fraction": _fraction(record.get("canary_fraction")),
        "reason": short_text(record.get("reason")),
        "issued_at": short_text(record.get("issued_at")),
    }


def stage_entries(records: object) -> list[dict[str, Any]]:
    """The valid stage changes, oldest first as the learner lists them, at most MAX_STAGES."""
    if not isinstance(records, list):
        return []
    entries = [entry for entry in map(stage_entry, records) if entry is not None]
    if len(entries) != len(records):
        log.warning("the learner listed %d malformed stage changes", len(records) - len(entries))
    return entries[-MAX_STAGES:]


def _score(value: object) -> dict[str, float | None]:
    score = value if isinstance(value, dict) else {}
    return {name: _fraction(score.get(name)) for name in ("precision", "recall")}


def evidence_entry(evidence: object) -> dict[str, Any] | None:
    """The live evidence of the current stage (corrections, agreement, both models' scores)."""
    if not isinstance(evidence, dict):
        return None
    corrections = evidence.get("corrections")
    return {
        "corrections": corrections
        if isinstance(corrections, int) and not isinstance(corrections, bool) and corrections >= 0
        else None,
        "agreement": _fraction(evidence.get("agreement")),
        "base": _score(evidence.get("base")),
        "candidate": _score(evidence.get("candidate")),
    }


def rollout_view(status: dict[str, Any]) -> dict[str, Any]:
    """The page's view of `GET /api/rollout`."""
    rollout = stage_entry(status.get("rollout"))
    return {
        "enabled": status.get("enabled") is True,
        "rollout": rollout,
        "evidence": evidence_entry(status.get("evidence")) if rollout is not None else None,
        "history": stage_entries(status.get("history")) if rollout is not None else [],
    }


def _requested_stage() -> Stage:
    body = request.get_json(silent=True)
    stage = _stage(body.get("stage")) if isinstance(body, dict) else None
    if stage is None:
        stages = ", ".join(str(stage) for stage in Stage)
        raise ApiError(422, "bad_stage", f'send {{"stage": ...}} with one of {stages}')
    return Stage(stage)


def _path_version(version: str) -> str:
    try:
        return check_version(version)
    except InvalidVersion as error:
        raise ApiError(400, "invalid_version", str(error)) from None


def install_rollout_view(app: Flask, learner_url: str | None) -> None:
    """The rollout routes of the history page."""

    @app.get("/ui/rollout")
    def rollout() -> Response:
        """The candidate in rollout (or the last one), its evidence and its stage changes."""
        learner = learner_client(learner_url)
        return jsonify(rollout_view(ask(learner.rollout, "rollout")))

    @app.get("/ui/models/<version>/stages")
    def stages(version: str) -> Response:
        target = _path_version(version)
        learner = learner_client(learner_url)
        return jsonify(
            version=target, stages=stage_entries(ask(lambda: learner.stages(target), "stages"))
        )

    @app.post("/ui/models/<version>/stage")
    def stage(version: str) -> Response:
        """Advance or roll back a candidate by hand; the learner judges the token."""
        target, wanted = _path_version(version), _requested_stage()
        learner = learner_client(learner_url, bearer_token())
        answer = ask(lambda: learner.stage(target, str(wanted), PAGE_REASON), "stage")
        log.info(
            "%s moved to %s through the history page", target, wanted, extra={"version": target}
        )
        return jsonify(stage_entry(answer))
