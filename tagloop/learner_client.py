"""A client for the learner's model API, behind `tagloop models` (contracts §5, learner).

Operators roll back from a terminal, so the logic lives here, testable
against a real learner, and the CLI only formats. Reads are public; promote
rollback and stage changes need the learner's admin token (`TAGLOOP_ADMIN_TOKEN`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import requests

from tagloop.domain.versions import check_version
from tagloop.errors import TagloopError
from tagloop.settings import env_optional, env_str

DEFAULT_LEARNER_URL = "http://127.0.0.1:8010"
ACTIVE_STAGES = ("shadow", "canary")
"""Rollout stages in which a candidate runs beside the served model (tagloop.domain.rollout)."""
TIMEOUT = 10.0


class LearnerApiError(TagloopError):
    """The learner could not be reached or refused the request (its error is in the message).

    `status` is the learner's HTTP status (None: no answer), so a caller in front of
    the learner (the UI's history page) can pass its verdict on.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LearnerClient:
    """The learner at `url`; `token` is needed only for promote and rollback."""

    url: str
    token: str | None = None

    @classmethod
    def from_env(cls) -> LearnerClient:
        """`TAGLOOP_LEARNER_URL` (default: the local stack's learner) and `TAGLOOP_ADMIN_TOKEN`."""
        url = env_str(os.environ, "TAGLOOP_LEARNER_URL", DEFAULT_LEARNER_URL)
        return cls(url.rstrip("/"), env_optional(os.environ, "TAGLOOP_ADMIN_TOKEN"))

    def models(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The current version and every stored version's metadata, newest first."""
        body = self._call("GET", "/api/models")
        return body.get("current_version"), list(body.get("models", []))

    def show(self, version: str) -> dict[str, Any]:
        """One stored version's metadata (LearnerApiError when there is none)."""
        check_version(version)
        for metadata in self.models()[1]:
            if metadata.get("version") == version:
                return metadata
        raise LearnerApiError(f"no model version {version!r} in the registry")

    def promote(self, version: str) -> dict[str, Any]:
        """Make `version` current; the learner broadcasts it to every replica. The id is
        checked first: it becomes part of the URL path."""
        return self._call("POST", f"/api/models/{check_version(version)}/promote")

    def rollback(self) -> dict[str, Any]:
        """Undo the latest change: stop a rollout in progress (its candidate is rolled back,
        the served version stays), else return to the promoted version before the current
        one. Returns the metadata of the version served afterwards."""
        record = self.rollout().get("rollout")
        current, versions = self.models()
        if isinstance(record, dict) and record.get("stage") in ACTIVE_STAGES:
            self.stage(str(record.get("version")), "rolled_back", "tagloop models rollback")
            return next(m for m in versions if m.get("version") == current)
        return self.promote(previous_promoted(current, versions))

    def rollout(self) -> dict[str, Any]:
        """The candidate in rollout (or the last one), its stage's evidence and its history."""
        return self._call("GET", "/api/rollout")

    def stage(self, version: str, stage: str, reason: str) -> dict[str, Any]:
        """Move `version` to a rollout stage; the learner records and broadcasts it."""
        body = {"stage": stage, "reason": reason}
        return self._call("POST", f"/api/models/{check_version(version)}/stage", body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = requests.request(
                method, self.url + path, headers=headers, json=body, timeout=TIMEOUT
            )
        except requests.RequestException as error:
            raise LearnerApiError(f"learner at {self.url} unreachable: {error}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not response.ok:
            detail = answer.get("error", {}) if isinstance(answer, dict) else {}
            message = detail.get("message") if isinstance(detail, dict) else None
            raise LearnerApiError(
                f"{method} {path}: HTTP {response.status_code}: {message or response.reason}",
                response.status_code,
            )
        if not isinstance(answer, dict):
            raise LearnerApiError(f"{method} {path}: the learner answered {answer!r}")
        return answer


def previous_promoted(current: str | None, versions: list[dict[str, Any]]) -> str:
    """The newest promoted version older than `current` (versions sort by creation).

    Rolling back twice steps back twice; rejected candidates are never a target.
    """
    if current is None:
        raise LearnerApiError("no model is current yet; nothing to roll back")
    older: list[str] = sorted(
        (
            m["version"]
            for m in versions
            if isinstance(m.get("version"), str)
            and m["version"] < current
            and (m.get("decision") or {}).get("promoted") is True
        ),
        reverse=True,
    )
    if not older:
        raise LearnerApiError(f"no promoted version older than {current}; nothing to roll back to")
    return older[0]
