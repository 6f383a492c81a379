"""The inference HTTP API (contracts §5), documented in openapi.json.

`create_app()` is the gunicorn entry point (`inference_service.app:create_app()`);
the worker's `Runtime` is started by gunicorn.conf.py after the fork. Tests
build an app around a `Runtime` they control.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, jsonify, request

from inference_service import predict as predicting
from inference_service.config import MAX_BODY_BYTES, InferenceSettings
from inference_service.predict import MODEL_VERSION_HEADER, PredictRoute, serving
from inference_service.runtime import Runtime
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
from tagloop.web.main_loop import respond, serve_in_main_loop

EXTENSION = "tagloop_inference"
SPEC_PATH = Path(__file__).with_name("openapi.json")


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def create_app(
    settings: InferenceSettings | None = None,
    runtime: Runtime | None = None,
    predict_route: bool = True,
) -> Flask:
    """`predict_route=False` leaves `POST /api/predict` to the Flask view alone: the
    reference that tests hold the plain WSGI route (inference_service/predict.py) to."""
    settings = settings or InferenceSettings.from_env()
    runtime = runtime or Runtime(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    keep_json_key_order(app)
    app.extensions[EXTENSION] = runtime
    holder = runtime.holder
    if predict_route:
        # Innermost: the middleware below wraps its answers exactly as Flask's.
        app.wsgi_app = PredictRoute(app.wsgi_app, holder)  # type: ignore[method-assign]
        # A prediction is CPU-only work: answered in the worker's main loop, no thread
        # hand-off (tagloop/web/main_loop.py), through this same app.
        serve_in_main_loop(app, {("POST", predicting.PATH): respond})
    if settings.proxy.enabled:
        # The client address for rate limiting is the one our proxies (the UI) saw.
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy)  # type: ignore[method-assign]
    httpmetrics.install(app)  # first, so that every answer below is counted
    install_cors(app, settings.cors_origin)
    install_security_headers(app)
    install_json_errors(app)
    refuse_redirects(app)
    spec = SPEC_PATH.read_bytes()

    @app.post(predicting.PATH)
    def predict() -> Response:
        # What PredictRoute leaves to Flask (and everything, without it): no provider layers.
        body, versions = predicting.answer(holder, json_body())
        return Response(body, mimetype="application/json", headers={MODEL_VERSION_HEADER: versions})

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
        loaded = serving(holder)
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
        return jsonify({"tags": serving(holder).tags})

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
