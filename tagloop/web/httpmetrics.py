"""HTTP request metrics shared by every Flask service, and the `/metrics` exposition.

The names are used by the alert rules (observability/alerts.yml), so both
services must export exactly these. Under gunicorn, prometheus-client runs in
multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before it is imported) and
`/metrics` aggregates every worker's files; otherwise the process registry is
exposed as usual.
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from tagloop import metric_writes
from tagloop.web import answerstart

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

REQUESTS = Counter(
    "tagloop_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["endpoint", "method", "status"],
)
DURATION = Histogram(
    "tagloop_http_request_duration_seconds",
    "Time from request start to response, by route template and method.",
    ["endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ROUTE_KEY = "tagloop.route"
"""Environ key where a handler that answers without Flask routing (a plain WSGI route in
front of the app) names its route template, the `endpoint` label Flask's rule would give."""
STARTED_KEY = "tagloop.started"
"""Environ key of the request's `time.perf_counter()` start when work on it began before the
app was called (the UI's main loop fetches the upstream answer first): its duration counts
from there. Read as the answer starts, so a handler inside the app may set it too."""


def install(app: Flask) -> None:
    """Count and time every request; labels stay bounded (route template, known methods)."""
    answerstart.add_hook(app, _record)


def _record(
    environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]], started: float
) -> None:
    """Record an answer as it starts (a hook of tagloop/web/answerstart.py: no Flask hooks,
    no `g`, issue 19).

    The route template is the one a plain WSGI route put under `ROUTE_KEY`, else the
    matched rule of the request Flask built for this environ (werkzeug keeps it in
    `werkzeug.request` until the response has started).
    """
    endpoint = environ.get(ROUTE_KEY) or _flask_route(environ)
    method = environ.get("REQUEST_METHOD", "")
    method = method if method in _METHODS else "OTHER"
    began = environ.get(STARTED_KEY) or started
    _duration(endpoint, method)(time.perf_counter() - began)
    _requests(endpoint, method, int(status[:3]))(1)


def _flask_route(environ: WSGIEnvironment) -> str:
    rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
    return rule.rule if rule is not None else "unmatched"


# The label sets are bounded, so their children's writers are made once, not per request.
@functools.cache
def _duration(endpoint: str, method: str) -> metric_writes.Write:
    return metric_writes.observer(DURATION.labels(endpoint, method))


@functools.cache
def _requests(endpoint: str, method: str, status: int) -> metric_writes.Write:
    return metric_writes.adder(REQUESTS.labels(endpoint, method, str(status)))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> Response:
    """The `/metrics` answer: all workers' metrics in multiprocess mode, else this process's."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
