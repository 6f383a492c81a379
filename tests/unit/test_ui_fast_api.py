"""The plain WSGI `/api/*` path answers exactly as the Flask route it stands in front of.

Every case is sent to two apps built from the same settings (the same cookie
secret): one with the fast path (`create_app`'s default), one with
`fast_api=False`, where Flask's `/api/<path:rest>` route answers everything.
Status, body (the stub upstreams echo what reached them: forwarded headers,
annotator, query, body), every answer header (a new cookie's random id and
date aside), the HTTP metric increments and the access log line must be equal.
The real stub upstreams, a port nobody listens on, one that hangs up and one
that answers too late stand in for replicas.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from frontend.app import MAX_BODY_BYTES, create_app
from frontend.settings import UISettings
from tagloop.web import httpmetrics
from tagloop.web.annotators import COOKIE_NAME, AnnotatorCookies
from tagloop.web.forwarding import ProxyChain, parse_networks
from tests.fixtures.pubsub import free_port

TITLES = ["a title"]
ENDPOINT = "/api/<path:rest>"


@dataclass(frozen=True)
class Seen:
    """What a client and an operator see of one request."""

    status: int
    body: bytes
    headers: Counter[tuple[str, str]]
    metrics: dict[str, float]
    log: list[tuple[str, dict[str, Any]]]
    fast_path: bool
    """Whether the plain WSGI handler answered (it names the route in the environ)."""


def _normalised(name: str, value: str) -> tuple[str, str]:
    """A header with a new cookie's random id and its Expires date made comparable."""
    if name.lower() == "set-cookie":
        value = re.sub(rf"{COOKIE_NAME}=[^;]*", f"{COOKIE_NAME}=ID", value)
        value = re.sub(r"Expires=[^;]*", "Expires=DATE", value)
    return name, value


def _metrics() -> Counter[str]:
    """Every sample of the proxy route's HTTP metrics, by name and labels."""
    counted: Counter[str] = Counter()
    for family in REGISTRY.collect():
        if family.name not in {"tagloop_http_requests", "tagloop_http_request_duration_seconds"}:
            continue
        for sample in family.samples:
            if sample.labels.get("endpoint") == ENDPOINT and sample.name.endswith(
                ("_total", "_count")
            ):
                counted[f"{sample.name}{sorted(sample.labels.items())}"] = int(sample.value)
    return counted


def _send(app: Flask, caplog: pytest.LogCaptureFixture, method: str, path: str, **kw: Any) -> Seen:
    environs: list[dict[str, Any]] = []
    inner = app.wsgi_app

    def recorded(environ: dict[str, Any], start_response: Any) -> Any:
        environs.append(environ)
        return inner(environ, start_response)

    app.wsgi_app = recorded  # type: ignore[method-assign]
    before = _metrics()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="frontend.app"):
        response = app.test_client().open(path, method=method, **kw)
    after = _metrics()
    after.subtract(before)
    log = [
        (
            record.getMessage(),
            {k: getattr(record, k) for k in ("method", "path", "status", "upstream")},
        )
        for record in caplog.records
        if record.name == "frontend.app"
    ]
    return Seen(
        response.status_code,
        response.get_data(),
        Counter(_normalised(n, v) for n, v in response.headers.items()),
        {name: value for name, value in after.items() if value},
        log,
        httpmetrics.ROUTE_KEY in environs[0],
    )


@dataclass(frozen=True)
class Pair:
    fast: Seen
    flask: Seen


@pytest.fixture
def pair(caplog: pytest.LogCaptureFixture) -> Callable[..., Pair]:
    """`pair(upstreams, method, path, settings_changes, **request)`: both apps' view of it."""

    def send_both(
        upstream_urls: list[str], method: str, path: str, changes: Any = None, **kw: Any
    ) -> Pair:
        base = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": ",".join(upstream_urls)})
        config = replace(base, **(changes or {}))
        fast = _send(create_app(config, TITLES), caplog, method, path, **kw)
        flask = _send(create_app(config, TITLES, fast_api=False), caplog, method, path, **kw)
        assert not flask.fast_path
        return Pair(fast, flask)

    return send_both


def assert_same(seen: Pair, fast_path: bool = True) -> Seen:
    """Both apps answered and reported alike; returns what the fast app did."""
    fast, flask = seen.fast, seen.flask
    assert fast.status == flask.status
    assert fast.body == flask.body
    assert fast.headers == flask.headers
    assert fast.metrics == flask.metrics
    assert fast.log == flask.log
    assert fast.fast_path is fast_path
    return fast


def cookie(secret: bytes) -> str:
    return f"{COOKIE_NAME}={AnnotatorCookies(secret).issue()}"


SECRET = b"s" * 32


def with_cookie(kwargs: dict[str, Any], cookies: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A parametrised request's keyword arguments and headers, with its `Cookie` case: "valid"
    (a cookie this UI issued), "" (none) or the header's literal value."""
    kwargs = dict(kwargs)
    headers = dict(kwargs.pop("headers", {}))
    if cookies:
        headers["Cookie"] = cookie(SECRET) if cookies == "valid" else cookies
    return kwargs, headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/api/predict",
            {"data": b'{"title": "h\xc3\xa9llo"}', "content_type": "application/json"},
        ),
        ("POST", "/api/predict?x=1&y=%C3%A9", {"data": b"not json", "content_type": "text/plain"}),
        ("POST", "/api/predict", {"data": b""}),
        ("GET", "/api/tags", {}),
        ("HEAD", "/api/tags", {}),
        ("POST", "/api/feedback", {"json": {"title": "t", "tags": ["python"]}}),  # a 429
        (
            "POST",
            "/api/predict",
            {
                "json": {"title": "t"},
                "headers": {
                    "X-Request-ID": "req-1",
                    "Accept": "application/json",
                    "Accept-Language": "de",
                    "X-Forwarded-For": "6.6.6.6",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "evil.example",
                    "X-Tagloop-Annotator": "anon:chosen-by-the-client",
                    "Authorization": "Bearer nope",
                    "Connection": "keep-alive, X-Request-ID",
                    "Host": "evil.example:80",
                },
                "environ_base": {"REMOTE_ADDR": "10.1.2.3"},
            },
        ),
        ("GET", "/api/openapi.json?status=201&header=X-Model-Version:v7&body=made", {}),
        ("GET", "/api/openapi.json?untyped=1&body=plain", {}),
        ("GET", "/api/openapi.json?status=204", {}),
        ("GET", "/api/openapi.json?status=304&header=ETag:x", {}),
        ("GET", "/api/openapi.json?status=302&header=Location:/elsewhere", {}),
        ("GET", "/api/openapi.json?header=Connection:close&header=Keep-Alive:5", {}),
        ("GET", "/api/openapi.json?status=599", {}),
    ],
)
@pytest.mark.parametrize(
    "cookies", ["valid", "", f"{COOKIE_NAME}=deadbeef.forged", "other=1; " + "x" * 2000]
)
def test_well_formed_requests_are_answered_alike_without_the_flask_route(
    upstreams: list[str],
    pair: Callable[..., Pair],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    cookies: str,
) -> None:
    kwargs, headers = with_cookie(kwargs, cookies)
    seen = pair(
        upstreams[:1], method, path, {"annotator_secret": SECRET}, headers=headers, **kwargs
    )
    fast = assert_same(seen)
    assert sum(fast.metrics.values()) == 2  # one request counted, one duration observed
    assert len(fast.log) == 1


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/..%2fmetrics", {}, 404),
        ("GET", "/api/%2e%2e/metrics", {}, 404),
        ("GET", "/api//model", {}, 404),
        ("GET", "/api/model/", {}, 404),
        ("GET", "/api/%6dodel", {}, 404),
        ("GET", "/api/echo", {}, 404),
        ("DELETE", "/api/model", {}, 405),
        ("GET", "/api/predict", {}, 405),
        ("OPTIONS", "/api/predict", {}, 200),
        ("POST", "/api/predict", {"data": b"x" * (MAX_BODY_BYTES + 1)}, 413),
        (
            "POST",
            "/api/predict",
            {"data": b'{"title": "t"}', "headers": {"Transfer-Encoding": "chunked"}},
            200,
        ),
        ("POST", "/api/predict", {"environ_overrides": {"CONTENT_LENGTH": "1e3"}}, 200),
    ],
)
def test_other_requests_are_left_to_flask(
    upstreams: list[str],
    pair: Callable[..., Pair],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    fast = assert_same(pair(upstreams[:1], method, path, **kwargs), fast_path=False)
    assert fast.status == status


def test_failover_and_upstream_failures_are_answered_alike(
    upstreams: list[str], hang_up: str, pair: Callable[..., Pair]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        ([dead, upstreams[0]], "POST", "/api/predict", {}, 200),  # skips the stopped one
        ([dead, dead], "GET", "/api/model", {}, 503),
        ([hang_up, upstreams[0]], "POST", "/api/predict", {}, 200),  # sent once more
        ([hang_up, upstreams[0]], "POST", "/api/feedback", {}, 502),  # never repeated
        ([upstreams[0]], "GET", "/api/model", {"upstream_timeout_seconds": 0.3}, 504),
    ]
    for urls, method, path, changes, status in cases:
        fast = assert_same(pair(urls, method, path, changes, data=b"{}"))
        assert fast.status == status, (urls, path)


def test_trusted_proxy_and_identity_rules_hold_on_the_fast_path(
    upstreams: list[str], pair: Callable[..., Pair]
) -> None:
    changes = {
        "proxy": ProxyChain(1, 2, parse_networks("n", "35.191.0.0/16")),
        "identity_header": "X-Goog-Authenticated-User-Email",
    }
    for peer in ("35.191.1.1", "203.0.113.5"):
        seen = pair(
            upstreams[:1],
            "GET",
            "/api/tags",
            changes,
            headers={
                "X-Forwarded-For": "6.6.6.6, 198.51.100.7, 34.120.0.9",
                "X-Forwarded-Proto": "https",
                "X-Goog-Authenticated-User-Email": "accounts.google.com:alice@example.com",
            },
            environ_base={"REMOTE_ADDR": peer},
        )
        fast = assert_same(seen)
        hsts = any(name == "Strict-Transport-Security" for name, _ in fast.headers)
        assert hsts == (peer == "35.191.1.1")


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=40,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request_id=header_text,
    accept=header_text,
    forwarded=header_text,
    cookie_header=header_text,
    query=st.text(st.sampled_from("ab=&%2F?é+"), max_size=12),
    body=st.binary(max_size=200),
)
def test_hostile_headers_and_bodies_are_answered_alike(
    upstreams: list[str],
    pair: Callable[..., Pair],
    request_id: str,
    accept: str,
    forwarded: str,
    cookie_header: str,
    query: str,
    body: bytes,
) -> None:
    seen = pair(
        upstreams[:1],
        "POST",
        "/api/predict?" + query,
        {"annotator_secret": SECRET},
        data=body,
        headers={
            "X-Request-ID": request_id,
            "Accept": accept,
            "X-Forwarded-For": forwarded,
            "Cookie": cookie_header,
        },
    )
    assert_same(seen)
