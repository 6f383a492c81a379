"""Prometheus metrics of the UI server (same HTTP metric names as the services).

Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR (set by
`serve.run` before this module is imported) and `/metrics` sums them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "tagloop_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "tagloop_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"]
)
UPSTREAM_ATTEMPTS = Counter(
    "tagloop_ui_upstream_attempts_total",
    "Requests sent to inference replicas, by outcome (ok, connect_error, broken, timeout)",
    ["upstream", "outcome"],
)


def count_upstream(upstream: str, outcome: str) -> None:
    UPSTREAM_ATTEMPTS.labels(upstream=upstream, outcome=outcome).inc()


def observe(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    LATENCY.labels(method=method, route=route).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text: every worker's samples when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
