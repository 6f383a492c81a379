"""The model history page's routes: the learner's versions, and promote/rollback behind its token.

The UI server is the browser's only origin, so it fetches the learner's
`GET /api/models` and forwards the two admin actions. It is no proxy: three
exact routes, each building its own learner request from validated parts.

- `GET /ui/models` is public and read-only. The learner's answer is checked
  field by field and only known, well-formed fields are passed on (version
  ids by the strict pattern, metrics as finite numbers, short strings), so
  nothing the page shows can be markup or an arbitrary path.
- `POST /ui/models/<version>/promote` and `POST /ui/models/rollback` need
  the learner's admin token in `Authorization: Bearer ...`. The UI never
  stores or logs it: it is passed on for this request and the learner
  checks it (a wrong one is the learner's 401, passed back).

A learner that cannot be reached is a 503 with a reason, one that fails a
502: the page explains either and the tagging page is unaffected.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request
from prometheus_client import Counter

from tagloop.domain.versions import InvalidVersion, check_version
from tagloop.learner_client import LearnerApiError, LearnerClient, previous_promoted
from tagloop.web.api import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")

LEARNER_CALLS = Counter(
    "tagloop_ui_learner_requests_total",
    "Requests the history page made to the learner, by action (list, promote, rollback) and "
    "outcome (ok, refused: a 4xx passed on, failed: 502, unavailable: 503).",
    ["action", "outcome"],
)

METRICS = (
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "accuracy",
    "average_precision_macro",
    "roc_auc_macro",
    "hamming_loss",
)
"""The metrics the page plots and lists; others in the metadata are not passed on."""
MAX_TEXT = 300
MAX_TOKEN_LENGTH = 512
# RFC 6750's b64token: what a bearer token may contain (no spaces, no controls).
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The learner's refusals the page can explain as they are; its other errors are the UI's
# to report (a 5xx of the learner is a bad gateway, not the user's fault).
PASSED_ON = {
    400: "invalid_version",
    401: "unauthorized",
    403: "admin_disabled",
    404: "version_not_found",
    409: "conflict",
}


def _text(value: object) -> str | None:
    """A string field, cut to a length the page can show; None for anything else."""
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _version(value: object) -> str | None:
    try:
        return check_version(value)
    except InvalidVersion:
        return None


def model_entry(metadata: object) -> dict[str, Any] | None:
    """What the page shows of one version's metadata; None when it has no valid id."""
    if not isinstance(metadata, dict) or (version := _version(metadata.get("version"))) is None:
        return None
    raw_metrics = metadata.get("metrics")
    metrics = {
        name: value
        for name in METRICS
        if isinstance(raw_metrics, dict) and (value := _number(raw_metrics.get(name))) is not None
    }
    decision = metadata.get("decision")
    promoted = decision.get("promoted") if isinstance(decision, dict) else None
    rows = metadata.get("training_rows")
    return {
        "version": version,
        "created_at": _text(metadata.get("created_at")),
        "parent_version": _version(metadata.get("parent_version")),
        "training_rows": rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
        "metrics": metrics,
        "decision": {
            "promoted": promoted if isinstance(promoted, bool) else None,
            "reason": _text(decision.get("reason")) if isinstance(decision, dict) else None,
        },
        "stage": _text(metadata.get("stage")),
    }


def history(current: object, models: list[Any]) -> dict[str, Any]:
    """The page's view of the learner's list: oldest first (the plot's time axis)."""
    entries = [entry for entry in map(model_entry, models) if entry is not None]
    if len(entries) != len(models):
        log.warning("the learner listed %d malformed versions", len(models) - len(entries))
    entries.sort(key=lambda entry: entry["version"])
    return {"current_version": _version(current), "models": entries, "metrics": list(METRICS)}


def bearer_token() -> str:
    """The admin token the page sent, checked for shape only (the learner judges it)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "admin_token_required",
            "promote and rollback need the admin token (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="tagloop-admin"'},
        )
    if len(token) > MAX_TOKEN_LENGTH or not BEARER_TOKEN.fullmatch(token):
        raise ApiError(400, "malformed_token", "the admin token has characters a token cannot")
    return token


def upstream_error(error: LearnerApiError) -> ApiError:
    """The learner's refusal passed on, or the UI's 502/503 when the learner failed."""
    if error.status is None:
        return ApiError(503, "learner_unavailable", str(error), {"Retry-After": "5"})
    if error.status in PASSED_ON:
        return ApiError(error.status, PASSED_ON[error.status], str(error))
    if error.status == 503:
        return ApiError(503, "learner_unavailable", str(error), {"Retry-After": "5"})
    return ApiError(502, "learner_failed", str(error))


def install_history(app: Flask, learner_url: str | None) -> None:
    """The history routes (the page itself is static/history.html, served at /history)."""

    def client(token: str | None = None) -> LearnerClient:
        if learner_url is None:
            raise ApiError(
                503, "learner_not_configured", "TAGLOOP_UI_LEARNER_URL is empty: no model history"
            )
        return LearnerClient(learner_url, token)

    def ask(call: Callable[[], T], action: str) -> T:
        try:
            answer = call()
        except LearnerApiError as error:
            log.warning("learner %s failed: %s", action, error, extra={"status": error.status})
            refusal = upstream_error(error)
            outcome = {502: "failed", 503: "unavailable"}.get(refusal.status, "refused")
            LEARNER_CALLS.labels(action, outcome).inc()
            raise refusal from None
        LEARNER_CALLS.labels(action, "ok").inc()
        return answer

    @app.get("/ui/models")
    def models() -> Response:
        """Every version's metrics, gate decision and stage, and the current version."""
        learner = client()
        current, listed = ask(learner.models, "list")
        return jsonify(history(current, listed))

    @app.post("/ui/models/<version>/promote")
    def promote(version: str) -> Response:
        try:
            target = check_version(version)
        except InvalidVersion as error:
            raise ApiError(400, "invalid_version", str(error)) from None
        learner = client(bearer_token())
        answer = ask(lambda: learner.promote(target), "promote")
        log.info("promoted %s through the history page", target, extra={"version": target})
        return jsonify(current_version=target, decision=answer.get("decision"))

    @app.post("/ui/models/rollback")
    def rollback() -> Response:
        """Promote the newest promoted version older than the current one."""
        learner = client(bearer_token())
        current, versions = ask(learner.models, "list")
        try:
            target = previous_promoted(current, versions)
        except LearnerApiError as error:
            raise ApiError(409, "nothing_to_roll_back", str(error)) from None
        answer = ask(lambda: learner.promote(target), "rollback")
        log.info("rolled back to %s through the history page", target, extra={"version": target})
        return jsonify(current_version=target, decision=answer.get("decision"))
