"""The floor for bench_serving.py: a bare Flask endpoint with a predict-like JSON answer.

Served by the same gunicorn settings as a replica (worker class, workers,
threads, keep-alive, preload, GIL switch interval), so the difference to a
replica's `POST /api/predict` is what tagloop adds per request.
"""

from __future__ import annotations

import sys

from flask import Flask, Response, jsonify, request

from tagloop.web.main_loop import respond, serve_in_main_loop

ANSWER_TAGS = [{"tag": "python", "score": 0.93}]
CANDIDATES = [{"tag": f"tag{i}", "score": 0.1} for i in range(5)]


def create_app(main_loop: bool = False) -> Flask:
    """`main_loop=True`: the endpoint is answered in the worker's main loop, as the replica's
    predictions are (a reference row only: the floor of the issue is the plain app)."""
    sys.setswitchinterval(0.001)  # as the replica's post_worker_init; inherited by the workers
    app = Flask(__name__)

    @app.post("/api/predict")
    def predict() -> Response:
        body = request.get_json()
        return jsonify(
            {
                "title": body["title"],
                "tags": ANSWER_TAGS,
                "model_version": "bare",
                "candidates": CANDIDATES,
            }
        )

    if main_loop:
        serve_in_main_loop(app, {("POST", "/api/predict"): respond})
    return app
