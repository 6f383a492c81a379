"""The inference HTTP API (contracts §5), documented in openapi.json.

`create_app()` is the gunicorn entry point (`inference_service.app:create_app()`);
the worker's `Runtime` is started by gunicorn.conf.py after the fork. Tests
build an app around a `Runtime` they control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

from inference_service import drift, metrics, rollout
from inference_service.config import MAX_BATCH, MAX_BODY_BYTES, InferenceSettings
from inference_service.model_holder import LoadedModel
from inference_service.runtime import Runtime
from tagloop.domain.messages import InvalidMessage, validate_title
from tagloop.domain.model import Prediction
from tagloop.web import httpmetrics
from tagloop.web.annotators import ANNOTATOR_HEADER, replica_annotator
from tagloop.web.api import (
    ApiError,
    install_cors,
    install_json_errors,
    install_security_headers,
    json_body,
    keep_json_key_order,
    refuse_redirects,
)
from tagloop.web.forwarding import TrustedProxyFix

CANDIDATES = 5
"""Next-best tags returned beside the chosen ones, for the UI's suggestions."""
EXTENSION = "tagloop_inference"
MODEL_VERSION_HEADER = "X-Model-Version"
SPEC_PATH = Path(__file__).with_name("openapi.json")


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def create_app(settings: InferenceSettings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = settings or InferenceSettings.from_env()
    runtime = runtime or Runtime(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    keep_json_key_order(app)
    app.extensions[EXTENSION] = runtime
    if settings.proxy.enabled:
        # The client address for rate limiting is the one our proxies (the UI) saw.
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy)  # type: ignore[method-assign]
    httpmetrics.install(app)  # first, so that every answer below is counted
    install_cors(app, settings.cors_origin)
    install_security_headers(app)
    install_json_errors(app)
    refuse_redirects(app)
    holder = runtime.holder
    spec = SPEC_PATH.read_bytes()

    def serving() -> LoadedModel:
        loaded = holder.current  # read once: a swap cannot change the model under this request
        if loaded is None:
            raise ApiError(503, "model_not_loaded", "no model loaded yet; retry shortly")
        return loaded

    @app.post("/api/predict")
    def predict() -> Response:
        titles, single = _titles(json_body())
        served = serving()
        predictions, versions = rollout.predict(served, holder.candidate, titles)
        # Drift is measured against the served model's vocabulary and training mix.
        drift.MONITOR.observe(served, titles, predictions)
        results = [_result(*answer) for answer in zip(titles, predictions, versions, strict=True)]
        body = json.dumps(results[0] if single else {"predictions": results})
        # The hot path: no provider layers. The header names the model that
        # answered (every one, in a batch split by a canary), so clients and
        # proxies can attribute a prediction without parsing the body.
        return Response(
            body,
            mimetype="application/json",
            headers={MODEL_VERSION_HEADER: ", ".join(dict.fromkeys(versions))},
        )

    @app.post("/api/feedback")
    def feedback() -> tuple[Response, int]:
        runtime.feedback.check_rate(request.remote_addr or "unknown")
        # The UI's annotator header is believed exactly when its X-Forwarded-For is:
        # the peer is a trusted proxy, so TrustedProxyFix rewrote the address.
        trusted_hop = "werkzeug.proxy_fix.orig" in request.environ
        annotator = replica_annotator(
            request.headers.get(ANNOTATOR_HEADER), request.remote_addr, trusted_hop
        )
        feedback_id = runtime.feedback.submit(json_body(), annotator)
        return jsonify({"feedback_id": feedback_id}), 202

    @app.get("/api/model")
    def model() -> Response:
        loaded = serving()
        return jsonify(
            {
                "version": loaded.version,
                "loaded_at": loaded.loaded_at,
                "metrics": loaded.metrics,
                "created_at": loaded.metadata.get("created_at"),
                "training_rows": loaded.metadata.get("training_rows"),
            }
        )

    @app.get("/api/tags")
    def tags() -> Response:
        return jsonify({"tags": serving().tags})

    @app.get("/api/openapi.json")
    def openapi() -> Response:
        return Response(spec, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        loaded = holder.current
        if loaded is None:
            raise ApiError(503, "not_ready", runtime.not_ready_reason)
        # Broadcasts are a shortcut (current.json reconciliation converges anyway), so a
        # permanent subscription problem is reported here without failing readiness.
        body = {"status": "ready", "model_version": loaded.version}
        reloader = runtime.reloader
        if reloader is not None and reloader.subscription_problem:
            body["model_updates"] = reloader.subscription_problem
        return jsonify(body)

    @app.get("/metrics")
    def prometheus() -> Response:
        return httpmetrics.exposition()

    return app


def _titles(body: dict[str, Any]) -> tuple[list[str], bool]:
    """The validated titles of a predict body, and whether it was the single-title form."""
    if ("title" in body) == ("titles" in body):
        raise ApiError(422, "missing_title", 'send exactly one of "title" or "titles"')
    if "title" in body:
        return [_valid_title(body["title"])], True
    titles = body["titles"]
    if not isinstance(titles, list):
        raise ApiError(422, "wrong_type", "titles must be a list of strings")
    if not titles:
        raise ApiError(422, "empty_batch", "titles is empty")
    if len(titles) > MAX_BATCH:
        raise ApiError(422, "batch_too_large", f"at most {MAX_BATCH} titles per request")
    return [_valid_title(title, f"titles[{i}]") for i, title in enumerate(titles)], False


def _valid_title(title: Any, where: str | None = None) -> str:
    try:
        return validate_title(title)
    except InvalidMessage as error:
        message = f"{where}: {error.detail}" if where else error.detail
        raise ApiError(422, error.reason, message) from None


def _result(title: str, prediction: Prediction, version: str) -> dict[str, Any]:
    """Chosen tags with their scores best first, then the best of the rest as candidates."""
    chosen = set(prediction.tags)
    tags: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    for tag, score in prediction.scores:
        if tag in chosen:
            tags.append({"tag": tag, "score": score})
        elif len(candidates) < CANDIDATES:
            candidates.append({"tag": tag, "score": score})
        if len(tags) == len(chosen) and len(candidates) == CANDIDATES:
            break
    metrics.TAGS_PER_PREDICTION.observe(len(tags))
    return {"title": title, "tags": tags, "model_version": version, "candidates": candidates}
