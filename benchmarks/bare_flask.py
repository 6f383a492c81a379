"""The floor for bench_serving.py: a bare Flask endpoint with a predict-like JSON answer.

Served by the same gunicorn settings as a replica (worker class, workers,
threads, keep-alive, preload, GIL switch interval), so the difference to a
replica's `POST /api/predict` is what tagloop adds per request.
"""

from __future__ import annotations

import sys

from flask import Flask, Response, jsonify, request

ANSWER_TAGS = [{"tag": "python", "score": 0.93}]
CANDIDATES = [{"tag": f"tag{i}", "score": 0.1} for i in range(5)]


def create_app() -> Flask:
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

    return app
