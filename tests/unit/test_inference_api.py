"""The inference HTTP API in-process (Flask test client): validation, shapes, headers, CORS.

The served model is the session's real trained model, put into the holder
directly; the model lifecycle and Pub/Sub are covered with real servers in
test_inference_replica.py.
"""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from inference_service.app import SPEC_PATH, create_app
from inference_service.config import MAX_BATCH, MAX_BODY_BYTES, InferenceSettings
from inference_service.feedback import RateLimiter
from inference_service.model_holder import LoadedModel
from inference_service.predict import CANDIDATES
from inference_service.runtime import Runtime
from tagloop.domain.model import TagModel
from tagloop.settings import ConfigError

UI_ORIGIN = "http://ui.example:8080"
TITLE = "How to merge two dictionaries in Python?"


def make_app(env: dict[str, str] | None = None) -> tuple[Flask, Runtime]:
    settings = InferenceSettings.from_env({"TAGLOOP_CORS_ORIGIN": UI_ORIGIN, **(env or {})})
    runtime = Runtime(settings)
    return create_app(settings, runtime), runtime


def serve(runtime: Runtime, model: TagModel, version: str = "v-test") -> LoadedModel:
    loaded = LoadedModel(
        model=model,
        version=version,
        metadata={"metrics": {"f1_macro": 0.61}, "created_at": "2026-01-01T00:00:00Z"},
        loaded_at="2026-01-01T00:00:01.000+00:00",
        loaded_at_unix=time.time(),
    )
    runtime.holder.swap(loaded)
    return loaded


@pytest.fixture(scope="module")
def client(trained_model: TagModel) -> FlaskClient:
    app, runtime = make_app()
    serve(runtime, trained_model)
    return app.test_client()


def error_code(response) -> str:
    assert response.is_json, response.data
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]["code"]


def test_single_title_prediction_has_chosen_tags_and_candidates(client, trained_model):
    response = client.post("/api/predict", json={"title": f"  {TITLE}  "})
    assert response.status_code == 200
    body = response.get_json()
    assert body["title"] == TITLE
    assert body["model_version"] == "v-test"
    assert response.headers["X-Model-Version"] == "v-test"
    expected = trained_model.predict([TITLE])[0]
    assert [t["tag"] for t in body["tags"]] == expected.tags
    assert "python" in expected.tags
    scores = [t["score"] for t in body["tags"] + body["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert len(body["candidates"]) == CANDIDATES
    assert not {t["tag"] for t in body["candidates"]} & set(expected.tags)


def test_batch_prediction_keeps_order(client, test_data):
    titles = test_data.titles[:50]
    response = client.post("/api/predict", json={"titles": titles})
    assert response.status_code == 200
    predictions = response.get_json()["predictions"]
    assert [p["title"] for p in predictions] == [t.strip() for t in titles]
    assert all(p["tags"] and p["model_version"] == "v-test" for p in predictions)
    assert response.headers["X-Model-Version"] == "v-test"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "title=x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": "title=x"}, 415, "unsupported_media_type"),
        ({"data": '{"title": ', "content_type": "application/json"}, 400, "malformed_json"),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, "malformed_json"),
        ({"json": ["a list"]}, 400, "malformed_json"),
        ({"json": {}}, 422, "missing_title"),
        ({"json": {"title": "a", "titles": ["b"]}}, 422, "missing_title"),
        ({"json": {"title": "   "}}, 422, "empty_title"),
        ({"json": {"title": 42}}, 422, "wrong_type"),
        ({"json": {"title": None}}, 422, "wrong_type"),
        ({"json": {"title": "x" * 301}}, 422, "title_too_long"),
        ({"json": {"titles": "not a list"}}, 422, "wrong_type"),
        ({"json": {"titles": []}}, 422, "empty_batch"),
        ({"json": {"titles": ["ok", ""]}}, 422, "empty_title"),
        ({"json": {"titles": ["x"] * (MAX_BATCH + 1)}}, 422, "batch_too_large"),
        (
            {"data": b"{" + b" " * MAX_BODY_BYTES + b"}", "content_type": "application/json"},
            413,
            "request_entity_too_large",
        ),
    ],
)
def test_bad_predict_requests_get_json_4xx(client, kwargs, status, code):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status
    assert error_code(response) == code


def test_title_limits_are_inclusive(client):
    assert client.post("/api/predict", json={"title": "x" * 300}).status_code == 200
    padded = "  " + "y" * 300 + "  "  # trimmed first, then measured
    assert client.post("/api/predict", json={"title": padded}).status_code == 200
    batch = client.post("/api/predict", json={"titles": ["z"] * MAX_BATCH})
    assert batch.status_code == 200 and len(batch.get_json()["predictions"]) == MAX_BATCH


def test_batch_error_names_the_bad_title(client):
    response = client.post("/api/predict", json={"titles": ["fine", "fine", 7]})
    assert response.get_json()["error"]["message"].startswith("titles[2]")


def test_model_tags_and_readiness(client, trained_model):
    model = client.get("/api/model").get_json()
    assert model["version"] == "v-test"
    assert model["metrics"] == {"f1_macro": 0.61}
    assert model["loaded_at"].startswith("2026-01-01T00:00:01")
    assert client.get("/api/tags").get_json() == {"tags": trained_model.classes_.tolist()}
    assert client.get("/readyz").get_json() == {"status": "ready", "model_version": "v-test"}
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_without_a_model_everything_that_needs_one_is_503(trained_model):
    app, runtime = make_app()
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    for response in (
        client.get("/readyz"),
        client.get("/api/model"),
        client.get("/api/tags"),
        client.post("/api/predict", json={"title": TITLE}),
    ):
        assert response.status_code == 503
        assert error_code(response) in {"not_ready", "model_not_loaded"}
    # Bad input is still the client's fault, model or not.
    assert client.post("/api/predict", json={"title": ""}).status_code == 422
    serve(runtime, trained_model, "v-late")
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/predict", json={"title": TITLE}).get_json()["model_version"] == (
        "v-late"
    )


def test_a_request_keeps_the_model_it_started_with(trained_model):
    """The swap replaces one reference; a request that read it keeps a complete model."""
    app, runtime = make_app()
    first = serve(runtime, trained_model, "v1")
    second = serve(runtime, trained_model, "v2")
    assert runtime.holder.current is second
    assert first.model.predict([TITLE])[0].tags  # the old object is still whole
    assert app.test_client().get("/api/model").get_json()["version"] == "v2"


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/api/nope").status_code == 404
    assert error_code(client.get("/api/nope")) == "not_found"
    response = client.get("/api/predict")
    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/api//model", "/api/model/", "//api/model", "/healthz/"])
def test_no_redirect_is_built_from_the_host_header(client, path):
    """Issue 11, reproduction 8: `Host: evil.example` never becomes a Location."""
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code in {200, 404}, path  # a trailing slash matches, no redirect
    assert "Location" not in response.headers


def test_hsts_only_when_a_trusted_proxy_says_tls(trained_model):
    app, runtime = make_app({"TAGLOOP_TRUSTED_PROXY_NETWORKS": "10.0.0.0/8"})
    serve(runtime, trained_model)
    client = app.test_client()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.1"}
    trusted = client.get("/api/model", headers=https, environ_base={"REMOTE_ADDR": "10.1.1.1"})
    assert trusted.headers["Strict-Transport-Security"].startswith("max-age=")
    untrusted = client.get("/api/model", headers=https, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert "Strict-Transport-Security" not in untrusted.headers
    assert "Strict-Transport-Security" not in client.get("/api/model").headers


def test_security_headers_on_every_answer(client):
    for response in (
        client.post("/api/predict", json={"title": TITLE}),
        client.post("/api/predict", json={}),
        client.get("/api/nope"),
        client.get("/metrics"),
    ):
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_cors_allows_only_the_ui_origin(client):
    allowed = client.post("/api/predict", json={"title": TITLE}, headers={"Origin": UI_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    other = client.post("/api/predict", json={"title": TITLE}, headers={"Origin": "http://evil"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers

    preflight = {"Access-Control-Request-Method": "POST"}
    ok = client.options("/api/feedback", headers={"Origin": UI_ORIGIN, **preflight})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in ok.headers["Access-Control-Allow-Headers"]
    refused = client.options("/api/feedback", headers={"Origin": "http://evil", **preflight})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_invalid_feedback_is_422_with_the_reason(client):
    cases = [
        ({"title": TITLE}, "wrong_type"),
        ({"title": TITLE, "tags": []}, "no_tags"),
        ({"title": "", "tags": ["python"]}, "empty_title"),
        ({"title": TITLE, "tags": ["python"], "feedback_id": ""}, "bad_feedback_id"),
        ({"title": TITLE, "tags": [f"t{i}" for i in range(11)]}, "too_many_tags"),
        ({"title": TITLE, "tags": ["python"], "model_version": 3}, "wrong_type"),
    ]
    for body, code in cases:
        response = client.post(
            "/api/feedback", json=body, headers={"X-Forwarded-For": "198.51.100.1"}
        )
        assert response.status_code == 422, body
        assert error_code(response) == code


def test_feedback_rate_limit_answers_429_with_retry_after():
    app, _ = make_app({"TAGLOOP_FEEDBACK_RATE": "0.01", "TAGLOOP_FEEDBACK_BURST": "3"})
    client = app.test_client()

    def post(client_ip: str):
        # Invalid bodies: the bucket is charged before validation, so floods of garbage
        # are limited too, and nothing needs publishing here.
        return client.post("/api/feedback", json={}, headers={"X-Forwarded-For": client_ip})

    assert [post("203.0.113.5").status_code for _ in range(4)] == [422, 422, 422, 429]
    limited = post("203.0.113.5")
    assert error_code(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert post("203.0.113.6").status_code == 422, "other clients have buckets of their own"


def test_token_bucket_refills_at_the_configured_rate():
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_clients=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") > 0
    limiter.acquire("b")
    limiter.acquire("c")  # bounded memory: "a", least recently seen, is forgotten
    assert limiter.acquire("a") == 0


def test_spec_documents_exactly_the_served_routes(client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec == json.loads(SPEC_PATH.read_text())
    routes = {
        (rule.rule, method.lower())
        for rule in client.application.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == documented


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TAGLOOP_WORKERS", "0"),
        ("TAGLOOP_THREADS", "many"),
        ("TAGLOOP_RECONCILE_SECONDS", "-1"),
        ("TAGLOOP_FEEDBACK_BURST", "0"),
        ("TAGLOOP_CORS_ORIGIN", " "),
    ],
)
def test_bad_configuration_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        InferenceSettings.from_env({name: value})


HUGE_INT = b"1" * 4301


# Issue 11, reproductions 1, 2, 5 and 6 at the replica: refused before anything is published.
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"title": "\\u0000\\u0000", "tags": ["python"]}', 422, "empty_title"),
        (b'{"title": "\\u007f", "tags": ["python"]}', 422, "empty_title"),
        (b'{"title": "How do I \\ud800 parse", "tags": ["python"]}', 400, "invalid_unicode"),
        (b'{"title": "x", "n": ' + HUGE_INT + b"}", 400, "number_too_large"),
        (b'{"title": "x", "tags": ["python"], "n": NaN}', 400, "invalid_number"),
        (b'{"title": "x", "title": "y", "tags": ["python"]}', 400, "duplicate_key"),
        (b'{"title": "x", "tags": ' + b"[" * 64 + b"]" * 64 + b"}", 400, "too_deep"),
        (
            json.dumps({"title": TITLE, "tags": ["python"], "model_version": "v" * 10**6}).encode(),
            422,
            "bad_model_version",
        ),
        (
            json.dumps({"title": TITLE, "tags": ["python"], "model_version": "v" * 101}).encode(),
            422,
            "bad_model_version",
        ),
        (
            json.dumps({"title": TITLE, "tags": ["python"], "model_version": "v1\u0000"}).encode(),
            422,
            "bad_model_version",
        ),
        (
            json.dumps({"title": TITLE, "tags": ["python"], "feedback_id": "f\u0007"}).encode(),
            422,
            "bad_feedback_id",
        ),
    ],
)
def test_hostile_feedback_is_a_4xx_before_anything_is_published(client, body, status, code):
    response = client.post(
        "/api/feedback",
        data=body,
        content_type="application/json",
        headers={"X-Forwarded-For": "198.51.100.77"},
    )
    assert response.status_code == status
    assert error_code(response) == code


def test_a_huge_integer_in_a_prediction_is_a_400_not_a_500(client):
    response = client.post(
        "/api/predict",
        data=b'{"title": "x", "n": ' + HUGE_INT + b"}",
        content_type="application/json",
    )
    assert response.status_code == 400
    assert error_code(response) == "number_too_large"
