"""The learner's HTTP API (contracts §5): status, versions, retrain, promote, rollout stages,
health, metrics.

Admin endpoints (retrain, promote, stage) need `Authorization: Bearer $TAGLOOP_ADMIN_TOKEN`;
with no token configured they answer 403 and do nothing: disabled, never open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from learning_service.learner import Learner
from learning_service.refit import Busy
from learning_service.rollout import StageConflict
from tagloop.channels.registry import (
    InvalidVersion,
    NotPromoted,
    RegistryError,
    Untrusted,
    VersionNotFound,
    check_version,
)
from tagloop.domain.messages import (
    MAX_ANNOTATOR_LENGTH,
    InvalidMessage,
    one_line,
    validate_identifier,
)
from tagloop.domain.rollout import Stage
from tagloop.web import httpmetrics
from tagloop.web.api import (
    ApiError,
    install_json_errors,
    install_security_headers,
    keep_json_key_order,
    refuse_redirects,
)

F = TypeVar("F", bound=Callable[..., Any])

MAX_BODY_BYTES = 4096  # the admin endpoints take no body, or a small JSON one (stage)
MAX_REASON_LENGTH = 500
MAX_SECOND_OPINIONS = 100


def _admin(token: str | None) -> Callable[[F], F]:
    """Require the bearer token, compared in constant time."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if token is None:
                raise ApiError(
                    403, "admin_disabled", "admin endpoints are disabled (no TAGLOOP_ADMIN_TOKEN)"
                )
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise ApiError(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <admin token>",
                    {"WWW-Authenticate": 'Bearer realm="tagloop-learning"'},
                )
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def _registry_unavailable(error: RegistryError) -> ApiError:
    return ApiError(503, "registry_unavailable", str(error), {"Retry-After": "5"})


@contextmanager
def _model_errors() -> Iterator[None]:
    """The answers of the admin model endpoints for what the registry or rollout refuse."""
    try:
        yield
    except InvalidVersion as error:
        raise ApiError(400, "invalid_version", str(error)) from None
    except VersionNotFound as error:
        raise ApiError(404, "version_not_found", str(error)) from None
    except Untrusted as error:
        raise ApiError(409, "version_untrusted", str(error)) from None
    except (StageConflict, NotPromoted) as error:
        raise ApiError(409, "stage_conflict", str(error)) from None
    except Busy as error:
        raise ApiError(503, "busy", str(error), {"Retry-After": "5"}) from None
    except RegistryError as error:
        raise _registry_unavailable(error) from None


def _stage_request(body: Any) -> tuple[Stage, str]:
    """The stage and reason of a stage-change body; 422 for anything else."""
    if not isinstance(body, dict):
        raise ApiError(422, "wrong_type", 'send a JSON object {"stage": ..., "reason": ...}')
    try:
        wanted = Stage(str(body.get("stage")))
    except ValueError:
        stages = ", ".join(str(stage) for stage in Stage)
        raise ApiError(422, "bad_stage", f"stage must be one of {stages}") from None
    reason = body.get("reason", "changed by an operator")
    if isinstance(reason, str):
        reason = one_line(reason)  # it goes into logs and the signed record: one line
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON_LENGTH:
        raise ApiError(422, "bad_reason", f"reason must be 1-{MAX_REASON_LENGTH} characters")
    return wanted, f"operator: {reason}"


def _second_opinion_query() -> tuple[str | None, int]:
    """`annotator` (optional, an annotator id) and `limit` (1-100, default 20), else a 400."""
    annotator = request.args.get("annotator") or None
    raw_limit = request.args.get("limit", "20")
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3) or not (
        1 <= int(raw_limit) <= MAX_SECOND_OPINIONS
    ):
        raise ApiError(400, "invalid_query", f"limit must be 1-{MAX_SECOND_OPINIONS}")
    if annotator is not None:
        try:
            validate_identifier(annotator, "annotator", "bad_annotator", MAX_ANNOTATOR_LENGTH)
        except InvalidMessage as error:
            raise ApiError(400, "invalid_query", error.detail) from None
    return annotator, int(raw_limit)


def create_app(learner: Learner) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    keep_json_key_order(app)
    install_json_errors(app)
    refuse_redirects(app)
    install_security_headers(app)
    httpmetrics.install(app)
    admin = _admin(learner.settings.admin_token)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks = learner.readiness()
        ready = all(checks.values())
        reasons = learner.not_ready_reasons()
        return jsonify(ready=ready, checks=checks, reasons=reasons), 200 if ready else 503

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(REGISTRY) + generate_latest(learner.metrics.registry)
        return Response(body, mimetype=CONTENT_TYPE_LATEST)

    @app.get("/api/status")
    def status() -> Response:
        return jsonify(learner.status())

    @app.get("/api/second-opinions")
    def second_opinions() -> Response:
        """Titles one other annotator corrected, for `annotator`'s queue (the UI server asks)."""
        return jsonify(items=learner.agreement.awaiting_second_opinion(*_second_opinion_query()))

    @app.get("/api/models")
    def models() -> Response:
        """Every stored version (newest first) with its metrics and promotion decision."""
        try:
            versions = learner.registry.list_versions()  # only versions whose signature verifies
            current = learner.registry.current_version()
        except Untrusted as error:  # a forged current.json: say so, list the rest
            return jsonify(
                current_version=None, current_refused=error.reason, models=versions[::-1]
            )
        except RegistryError as error:
            raise _registry_unavailable(error) from None
        return jsonify(current_version=current, models=versions[::-1])

    @app.post("/api/retrain")
    @admin
    def retrain() -> tuple[Response, int]:
        if not learner.refitter.loaded:
            raise ApiError(503, "not_ready", "the model registry has not been reached yet")
        starts_in = learner.refitter.request_retrain()
        return jsonify(
            scheduled=True,
            starts_in_seconds=round(starts_in, 3),
            fit_in_progress=learner.refitter.fit_in_progress,
        ), 202

    @app.post("/api/models/<version>/promote")
    @admin
    def promote(version: str) -> Response:
        """Roll back or forward: current.json moves to `version` and replicas are told
        (a rollout in progress ends: its candidate goes to full or is superseded)."""
        with _model_errors():
            metadata = learner.rollout.promote(check_version(version))
        return jsonify(
            version=metadata["version"],
            decision=metadata["decision"],
            metrics=metadata.get("metrics"),
        )

    @app.get("/api/rollout")
    def rollout() -> Response:
        """The rollout record, the live evidence of its stage, and the candidate's history."""
        status = learner.rollout.status()
        record = status["rollout"]
        history: list[dict[str, Any]] = []
        if record is not None:
            try:
                history = learner.registry.rollout_history(record["version"])
            except RegistryError as error:
                raise _registry_unavailable(error) from None
        return jsonify(**status, history=history)

    @app.get("/api/models/<version>/stages")
    def stages(version: str) -> Response:
        """Every stage change recorded for `version`, oldest first (for the history page)."""
        with _model_errors():
            history = learner.registry.rollout_history(check_version(version))
        return jsonify(version=version, stages=history)

    @app.post("/api/models/<version>/stage")
    @admin
    def stage(version: str) -> Response:
        """Move `version` to a rollout stage by hand (body: {"stage": ..., "reason": ...})."""
        wanted, reason = _stage_request(request.get_json(silent=True))
        with _model_errors():
            record = learner.rollout.set_stage(check_version(version), wanted, reason)
        return jsonify(record.to_dict())

    return app
