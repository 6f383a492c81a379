"""The UI server: static files under a strict CSP, the queue, and the `/api/*` proxy.

One Flask app serves everything the browser needs from a single origin, so the
page can forbid every other source (`default-src 'self'`) and work offline.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

from flask import Flask, Response, g, jsonify, request, send_from_directory
from prometheus_client import Counter

from frontend.edge import Edge, log_request
from frontend.fast_api import FastApi, relayed, upstream_failure
from frontend.history import install_history
from frontend.loop_proxy import LoopProxy
from frontend.proxy import ROUTES, UpstreamError, UpstreamPool, exact_route
from frontend.rollout_view import install_rollout_view
from frontend.second_opinions import SecondOpinions
from frontend.settings import UISettings
from frontend.tag_rules import tag_rules
from tagloop.web import httpmetrics
from tagloop.web.api import (
    ApiError,
    install_json_errors,
    install_security_headers,
    keep_json_key_order,
    refuse_redirects,
)
from tagloop.web.forwarding import TrustedProxyFix
from tagloop.web.main_loop import serve_in_main_loop

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Bigger than the inference API's own limit, so that one answers 413 with its reason.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_QUEUE_PAGE = 100
MAIN_LOOP_CONNECTIONS = 32
"""Idle upstream connections kept per upstream beyond one per thread: the worker's main loop
has as many exchanges in flight as clients waiting (frontend/loop_proxy.py)."""

# Everything the page loads comes from this origin; nothing inline, no framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})

UPSTREAM_ATTEMPTS = Counter(
    "tagloop_ui_upstream_attempts_total",
    "Requests the UI sent to inference replicas, by outcome (ok, connect_error, broken, timeout).",
    ["upstream", "outcome"],
)


@functools.cache  # upstreams and outcomes are few: each child is looked up once
def _attempts(upstream: str, outcome: str) -> Counter:
    return UPSTREAM_ATTEMPTS.labels(upstream, outcome)


def _count_attempt(upstream: str, outcome: str) -> None:
    _attempts(upstream, outcome).inc()


def _query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_query", f"{name} must be an integer, got {raw[:20]!r}"
        ) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400, "invalid_query", f"{name} must be between {minimum} and {maximum}, got {value}"
        )
    return value


def _known_route() -> str:
    """The request's path if it is an inference route exactly as sent, else a 404 or 405."""
    path = exact_route(request.environ)
    if path is None:
        raise ApiError(404, "not_found", "no such API route")
    methods = ROUTES[path]
    if request.method not in methods:
        raise ApiError(
            405, "method_not_allowed", "method not allowed", {"Allow": ", ".join(sorted(methods))}
        )
    return path


def create_app(
    settings: UISettings,
    titles: list[str],
    pool: UpstreamPool | None = None,
    *,
    fast_api: bool = True,
) -> Flask:
    """Build the app; `titles` is the queue (loaded once by the caller, shared by workers).

    `fast_api=False` leaves every `/api/*` request to the Flask route, the
    reference the plain WSGI path and the main-loop handler are tested against
    (frontend/fast_api.py, frontend/loop_proxy.py).
    """
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    keep_json_key_order(app)
    upstreams = pool or UpstreamPool(
        settings.upstreams,
        settings.upstream_timeout_seconds,
        pool_size=settings.threads + MAIN_LOOP_CONNECTIONS,
        on_attempt=_count_attempt,
    )
    edge = Edge(settings.annotator_secret, settings.identity_header)
    if fast_api:
        fast = FastApi(app.wsgi_app, upstreams, edge, MAX_BODY_BYTES)
        app.wsgi_app = fast  # type: ignore[method-assign]
        # The proxied routes wait for a replica in the worker's main loop, not in a thread.
        proxy = LoopProxy(
            upstreams,
            edge,
            settings.proxy,
            MAX_BODY_BYTES,
            settings.upstream_timeout_seconds,
            fast.handovers,
        )
        serve_in_main_loop(app, {(m, path): proxy for path, ms in ROUTES.items() for m in ms})
    if settings.proxy.enabled:
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, settings.proxy)  # type: ignore[method-assign]
    client_config = {
        "model_poll_seconds": settings.model_poll_seconds,
        "queue_size": len(titles),
        "tag_rules": tag_rules(),
    }

    install_json_errors(app)
    refuse_redirects(app)
    httpmetrics.install(app)
    install_security_headers(app, csp=PAGE_CSP, extra=PAGE_HEADERS)
    learner = SecondOpinions(settings.learner_url) if settings.learner_url else None

    @app.after_request
    def give_annotator_id(response: Response) -> Response:
        """Every browser gets an anonymous id on its first visit (or after a forged one)."""
        if request.path not in QUIET_ROUTES and not edge.cookie_annotator(request.environ):
            response.headers.add("Set-Cookie", edge.new_cookie(request.environ))
        return response

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        log_request(
            request.method,
            request.path,
            response.status_code,
            seconds,
            g.get("upstream"),
            quiet=route in QUIET_ROUTES,
        )
        return response

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/history")
    def history_page() -> Response:
        return send_from_directory(STATIC_DIR, "history.html")

    install_history(app, settings.learner_url)
    install_rollout_view(app, settings.learner_url)

    @app.get("/ui/config")
    def config() -> Response:
        """Settings and tag rules the page needs before it can work."""
        return jsonify(client_config)

    @app.get("/ui/queue")
    def queue() -> Response:
        """A page of unlabelled titles with their positions in the queue."""
        offset = _query_int("offset", 0, 0, 10**9)
        limit = _query_int("limit", 20, 1, MAX_QUEUE_PAGE)
        items = [
            {"index": index, "title": titles[index]}
            for index in range(offset, min(offset + limit, len(titles)))
        ]
        return jsonify(total=len(titles), offset=offset, items=items)

    @app.get("/ui/queue/second-opinions")
    def second_opinions() -> Response:
        """Titles another annotator corrected and nobody else yet: the queue shows them first."""
        limit = _query_int("limit", 20, 1, MAX_QUEUE_PAGE)
        titles = learner.titles(edge.annotator(request.environ), limit) if learner else []
        return jsonify(items=titles)

    @app.route("/api/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    def api(rest: str) -> Response:
        """Forward a known inference route to a replica; answer with its status, body, headers."""
        path = _known_route()
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        environ = request.environ
        attempt = upstreams.prepare(
            request.method, path, request.get_data(cache=False), environ, edge.forwarded(environ)
        )
        try:
            answer = upstreams.forward(attempt)
        except UpstreamError as error:
            return upstream_failure(error, request.method, path)
        g.upstream = answer.upstream
        return relayed(answer)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready once built: the page works (and explains outages) without any replica."""
        return jsonify(status="ready", upstreams=len(settings.upstreams))

    @app.get("/metrics")
    def prometheus() -> Response:
        return httpmetrics.exposition()

    return app
