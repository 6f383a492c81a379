"""The plain WSGI route for `POST /api/predict` answers exactly as the Flask view it bypasses.

Two apps around the same real model: one with `PredictRoute` (as served), one
without (the Flask view, the behaviour before issue 19). Every request goes to
both; status line, body, every header (in order) and the counted metrics must
be the same, for valid, malformed, hostile, oversized and misdirected requests,
on an environ like gunicorn's (`wsgi.input_terminated`) and like werkzeug's.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from werkzeug.test import Client, TestResponse

from inference_service import drift
from inference_service.app import create_app
from inference_service.config import MAX_BATCH, MAX_BODY_BYTES, InferenceSettings
from inference_service.predict import CANDIDATES, PATH, PredictRoute, _result
from inference_service.runtime import Runtime
from tagloop.domain.model import Prediction, TagModel
from tests.unit.test_inference_api import TITLE, UI_ORIGIN, serve

JSON = "application/json"
GUNICORN = {"wsgi.input_terminated": True, "REMOTE_ADDR": "127.0.0.1"}
WERKZEUG: dict[str, Any] = {"REMOTE_ADDR": "192.0.2.7"}


def make(model: TagModel | None, predict_route: bool) -> Flask:
    settings = InferenceSettings.from_env(
        {"TAGLOOP_CORS_ORIGIN": UI_ORIGIN, "TAGLOOP_TRUSTED_PROXY_NETWORKS": "127.0.0.0/8"}
    )
    runtime = Runtime(settings)
    if model is not None:
        serve(runtime, model)
    return create_app(settings, runtime, predict_route=predict_route)


@pytest.fixture(scope="module")
def apps(trained_model: TagModel) -> tuple[Flask, Flask]:
    return make(trained_model, True), make(trained_model, False)


def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every tagloop sample in the process registry but timings (a histogram's count stays)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name.startswith("tagloop_")
        and not sample.name.endswith(("_bucket", "_sum", "_created"))
    }


def send(app: Flask, **request: Any) -> tuple[TestResponse, dict[Any, float]]:
    before = counted()
    response = Client(app).open(**request)
    response.get_data()
    after = counted()
    increments = {key: value - before.get(key, 0) for key, value in after.items()}
    return response, {key: value for key, value in increments.items() if value}


def same_answer(apps: tuple[Flask, Flask], **request: Any) -> TestResponse:
    """Send `request` to both apps; assert identical answers and metric increments."""
    route, view = apps
    fast, fast_counts = send(route, **request)
    slow, slow_counts = send(view, **request)
    assert fast.status == slow.status
    assert fast.get_data() == slow.get_data()
    assert list(fast.headers.items()) == list(slow.headers.items())
    assert fast_counts == slow_counts
    return fast


def post(body: bytes, content_type: str | None = JSON, **extra: Any) -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return {"path": PATH, "method": "POST", "data": body, "headers": headers, **extra}


HUGE_INT = b"1" * 4301
BODIES = [
    json.dumps({"title": TITLE}).encode(),
    json.dumps({"title": f"  {TITLE}  ", "extra": [1, 2]}).encode(),
    json.dumps({"titles": [TITLE, "sql join two tables", "   css grid  "]}).encode(),
    json.dumps({"titles": ["fine", 7]}).encode(),
    json.dumps({"titles": ["x"] * (MAX_BATCH + 1)}).encode(),
    json.dumps({"titles": []}).encode(),
    json.dumps({"titles": "not a list"}).encode(),
    json.dumps({"title": "a", "titles": ["b"]}).encode(),
    json.dumps({}).encode(),
    json.dumps(["a list"]).encode(),
    json.dumps({"title": None}).encode(),
    json.dumps({"title": "x" * 301}).encode(),
    json.dumps({"title": "\u0000\u0007"}).encode(),
    json.dumps({"title": "<script>alert(1)</script>' OR 1=1 --"}).encode(),
    json.dumps({"title": "naïve 日本語 😀 \u202e"}).encode(),
    b'{"title": "How do I \\ud800 parse"}',
    b'{"title": "x", "n": ' + HUGE_INT + b"}",
    b'{"title": "x", "n": NaN}',
    b'{"title": "x", "title": "y"}',
    b'{"title": "x", "n": ' + b"[" * 64 + b"]" * 64 + b"}",
    b'{"title": ',
    b"\xff\xfe",
    b"",
    b"{" + b" " * MAX_BODY_BYTES + b"}",
]
CONTENT_TYPES = [
    JSON,
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/json;",
    " application/json",
    "application/jsonx",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
    None,
]


@pytest.mark.parametrize("environ", [GUNICORN, WERKZEUG], ids=["gunicorn", "werkzeug"])
@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_bodies_answer_alike(apps, environ, body):
    same_answer(apps, **post(body, environ_base=environ))


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_content_types_answer_alike(apps, content_type):
    same_answer(apps, **post(json.dumps({"title": TITLE}).encode(), content_type))


def test_the_route_serves_the_common_request_and_counts_its_route(apps):
    """Not a vacuous comparison: the route itself answered, labelled as Flask would."""
    route, _ = apps
    layer = route.wsgi_app
    while not isinstance(layer, PredictRoute):
        layer = layer.app  # the middleware chain, outermost first
    label = {"endpoint": PATH, "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("tagloop_http_requests_total", label) or 0
    answer = same_answer(apps, **post(json.dumps({"title": TITLE}).encode()))
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "v-test"
    assert REGISTRY.get_sample_value("tagloop_http_requests_total", label) == before + 2


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_other_methods_answer_alike(apps, method):
    same_answer(apps, path=PATH, method=method, headers={"Origin": UI_ORIGIN})


@pytest.mark.parametrize(
    "path", ["/api/predict/", "/api//predict", "/api/Predict", "//api/predict"]
)
def test_neighbouring_paths_answer_alike(apps, path):
    same_answer(apps, **(post(json.dumps({"title": TITLE}).encode()) | {"path": path}))


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": UI_ORIGIN},
        {"Origin": "http://evil.example"},
        {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
        {"Transfer-Encoding": "chunked"},
    ],
)
@pytest.mark.parametrize("environ", [GUNICORN, WERKZEUG], ids=["gunicorn", "werkzeug"])
def test_headers_and_proxies_answer_alike(apps, headers, environ):
    request = post(json.dumps({"title": TITLE}).encode(), environ_base=environ)
    request["headers"] |= headers
    same_answer(apps, **request)


@pytest.mark.parametrize("environ", [GUNICORN, WERKZEUG], ids=["gunicorn", "werkzeug"])
@pytest.mark.parametrize("declared", ["5", "500", "0", "+3", "-1", "1e3", "²"])
def test_declared_lengths_answer_alike(apps, environ, declared):
    """A body shorter or longer than its Content-Length, or a length werkzeug reads oddly."""
    request = post(json.dumps({"title": TITLE}).encode(), environ_base=environ)
    request["environ_overrides"] = {"CONTENT_LENGTH": declared}
    same_answer(apps, **request)


def test_without_a_model_both_answer_503(trained_model):
    both = make(None, True), make(None, False)
    assert same_answer(both, **post(json.dumps({"title": TITLE}).encode())).status_code == 503
    assert same_answer(both, **post(json.dumps({"title": ""}).encode())).status_code == 422


def test_a_bug_is_a_logged_500_alike(apps, monkeypatch, caplog):
    def broken(*_: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(drift.MONITOR, "observe", broken)
    with caplog.at_level(logging.ERROR, logger="tagloop.web.api"):
        answer = same_answer(apps, **post(json.dumps({"title": TITLE}).encode()))
    assert answer.status_code == 500
    logged = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert logged == [(f"unhandled error on POST {PATH}", True)] * 2


titles = st.text(max_size=320) | st.integers() | st.none() | st.lists(st.text(max_size=40))
bodies = st.one_of(
    st.binary(max_size=200),
    st.fixed_dictionaries({"title": titles}).map(lambda b: json.dumps(b).encode()),
    st.fixed_dictionaries({"titles": st.lists(titles, max_size=5)}).map(
        lambda b: json.dumps(b).encode()
    ),
    st.dictionaries(st.sampled_from(["title", "titles", "x"]), titles).map(
        lambda b: json.dumps(b, ensure_ascii=False).encode()
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
    environ=st.sampled_from([GUNICORN, WERKZEUG]),
)
def test_any_request_answers_alike(apps, body, content_type, environ):
    same_answer(apps, **post(body, content_type, environ_base=environ))


SCORES = st.one_of(
    st.integers(0, 10_000).map(lambda n: n / 10_000.0),  # what answers carry
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    title=st.text(max_size=40),
    version=st.text(max_size=30),
    ranked=st.lists(st.tuples(st.text(max_size=12), SCORES), min_size=1, max_size=12),
    chosen=st.integers(1, 3),
)
def test_a_result_is_the_text_json_dumps_writes_for_it(
    title: str, version: str, ranked: list[tuple[str, float]], chosen: int
) -> None:
    """The answer's text, written directly, is `json.dumps` of the result object: any
    title, tag names and versions (escapes, non-ASCII, quotes), any finite score."""
    chosen = min(chosen, len(ranked))
    prediction = Prediction(tags=[tag for tag, _ in ranked[:chosen]], scores=ranked, words=[])
    expected = {
        "title": title,
        "tags": [{"tag": tag, "score": score} for tag, score in ranked[:chosen]],
        "model_version": version,
        "candidates": [
            {"tag": tag, "score": score} for tag, score in ranked[chosen : chosen + CANDIDATES]
        ],
    }
    assert _result(title, prediction, version) == json.dumps(expected)


def test_a_batch_answer_is_the_text_json_dumps_writes_for_it(apps):
    titles = [TITLE, "sql join two tables", "   css grid  ", 'ünïcode "quoted" \\ title']
    response = same_answer(apps, **post(json.dumps({"titles": titles}).encode()))
    text = response.get_data(as_text=True)
    assert json.dumps(json.loads(text)) == text
    assert [r["title"] for r in json.loads(text)["predictions"]] == [t.strip() for t in titles]
