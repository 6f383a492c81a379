"""One `AnswerStart` wrapper (tagloop/web/answerstart.py) answers exactly as the three nested
middlewares it replaced (issue 19): the same status and headers, in the same order, and the
same request metrics, for any headers an app or a relayed upstream may have set.

The reference below is the previous code (metrics, CORS and security headers, each its own
`start_response` wrapper), kept here as the oracle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tagloop.web import httpmetrics
from tagloop.web.answerstart import AnswerStart
from tagloop.web.api import (
    EXPOSED_HEADERS,
    HSTS,
    JSON_CSP,
    SECURITY_HEADERS,
    install_cors,
    install_security_headers,
)

ORIGIN = "http://ui.example:8080"
Headers = list[tuple[str, str]]


class ReferenceSecurity:
    def __init__(self, app: Any, csp: str, extra: dict[str, str]) -> None:
        self.app = app
        self.defaults = [
            *SECURITY_HEADERS.items(),
            ("Content-Security-Policy", csp),
            *extra.items(),
        ]
        self.over_tls = [*self.defaults, HSTS]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            tls = environ.get("wsgi.url_scheme") == "https"
            present = {name.lower() for name, _ in headers}
            headers.extend(
                (n, v)
                for n, v in (self.over_tls if tls else self.defaults)
                if n.lower() not in present
            )
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class ReferenceCors:
    def __init__(self, app: Any, origin: str, path_prefix: str) -> None:
        self.app, self.origin, self.path_prefix = app, origin, path_prefix

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = "/" + environ.get("PATH_INFO", "").lstrip("/")
        if not path.startswith(self.path_prefix):
            return self.app(environ, start_response)
        allowed = environ.get("HTTP_ORIGIN") == self.origin

        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            vary = next((v for n, v in headers if n.lower() == "vary"), "")
            if "origin" not in vary.lower():
                headers[:] = [(n, v) for n, v in headers if n.lower() != "vary"]
                headers.append(("Vary", f"{vary}, Origin" if vary else "Origin"))
            if allowed:
                names = {"access-control-allow-origin", "access-control-expose-headers"}
                headers[:] = [(n, v) for n, v in headers if n.lower() not in names]
                headers.append(("Access-Control-Allow-Origin", self.origin))
                headers.append(("Access-Control-Expose-Headers", EXPOSED_HEADERS))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class ReferenceMeasured:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()

        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            endpoint = environ.get(httpmetrics.ROUTE_KEY) or "unmatched"
            method = environ.get("REQUEST_METHOD", "")
            method = (
                method
                if method in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
                else "OTHER"
            )
            httpmetrics.DURATION.labels(endpoint, method).observe(time.perf_counter() - started)
            httpmetrics.REQUESTS.labels(endpoint, method, str(int(status[:3]))).inc()
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def inner_app(status: str, headers: Headers) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ[httpmetrics.ROUTE_KEY] = "/answer-start-test"
        start_response(status, list(headers))
        return [b"{}"]

    return app


def new_chain(status: str, headers: Headers, csp: str, extra: dict[str, str]) -> Any:
    """As inference_service/app.py installs them: metrics, CORS, then security headers."""
    app = Flask(__name__)
    app.wsgi_app = inner_app(status, headers)  # type: ignore[method-assign]
    httpmetrics.install(app)
    install_cors(app, ORIGIN)
    install_security_headers(app, csp, extra)
    assert isinstance(app.wsgi_app, AnswerStart) and len(app.wsgi_app.hooks) == 3
    return app.wsgi_app


def old_chain(status: str, headers: Headers, csp: str, extra: dict[str, str]) -> Any:
    measured = ReferenceMeasured(inner_app(status, headers))
    return ReferenceSecurity(ReferenceCors(measured, ORIGIN, "/api/"), csp, extra)


def answer(app: Any, environ: dict[str, Any]) -> tuple[str, Headers]:
    started: list[tuple[str, Headers]] = []
    app(dict(environ), lambda status, headers, exc_info=None: started.append((status, headers)))
    return started[0]


def counts() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name.startswith("tagloop_http_")
        and not sample.name.endswith(("_sum", "_created"))
    }


def increments(app: Any, environ: dict[str, Any]) -> dict[Any, float]:
    before = counts()
    answer(app, environ)
    # Timings differ by nanoseconds; both land in the first bucket, so bucket counts match.
    return {key: value - before.get(key, 0.0) for key, value in counts().items()}


NAMES = st.sampled_from(
    [
        "Vary",
        "vary",
        "Access-Control-Allow-Origin",
        "access-control-expose-headers",
        "X-Frame-Options",
        "content-security-policy",
        "Strict-Transport-Security",
        "Content-Type",
        "X-Model-Version",
    ]
)
VALUES = st.sampled_from(["", "Origin", "Accept-Encoding", "accept, ORIGIN", "x", "*"])


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(NAMES, VALUES), max_size=6),
    status=st.sampled_from(
        ["200 OK", "204 NO CONTENT", "404 NOT FOUND", "500 INTERNAL SERVER ERROR"]
    ),
    path=st.sampled_from(["/api/predict", "/api", "//api/x", "/healthz", "", "/API/x"]),
    origin=st.sampled_from([None, ORIGIN, "http://evil.example", ""]),
    scheme=st.sampled_from(["http", "https"]),
    method=st.sampled_from(["POST", "GET", "BREW"]),
    page=st.booleans(),
)
def test_same_headers_and_metrics_as_the_nested_middlewares(
    headers: Headers,
    status: str,
    path: str,
    origin: str | None,
    scheme: str,
    method: str,
    page: bool,
) -> None:
    csp, extra = (
        ("default-src 'self'", {"Permissions-Policy": "camera=()"})
        if page
        else (
            JSON_CSP,
            {},
        )
    )
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "wsgi.url_scheme": scheme}
    if origin is not None:
        environ["HTTP_ORIGIN"] = origin
    new, old = new_chain(status, headers, csp, extra), old_chain(status, headers, csp, extra)
    assert answer(new, environ) == answer(old, environ)
    assert increments(new, environ) == increments(old, environ)


def test_a_middleware_installed_between_hooks_keeps_its_place() -> None:
    """Hooks installed after another wrapper run outside it, as their middleware did."""
    app = Flask(__name__)
    app.wsgi_app = inner_app("200 OK", [])  # type: ignore[method-assign]
    httpmetrics.install(app)
    first = app.wsgi_app
    seen: list[str] = []

    def between(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append("between")
        return first(environ, start_response)

    app.wsgi_app = between  # type: ignore[method-assign]
    install_security_headers(app)
    assert isinstance(app.wsgi_app, AnswerStart) and app.wsgi_app.app is between
    _, headers = answer(app.wsgi_app, {"PATH_INFO": "/", "REQUEST_METHOD": "GET"})
    assert seen == ["between"] and ("X-Frame-Options", "DENY") in headers
