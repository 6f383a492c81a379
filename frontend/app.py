"""The UI server: static files under a strict CSP, the queue, and the `/api/*` proxy.

One Flask app serves everything the browser needs from a single origin, so the
page can forbid every other source (`default-src 'self'`) and work offline.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import quote

from flask import Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from frontend import metrics
from frontend.proxy import UpstreamError, UpstreamPool
from frontend.settings import UISettings
from frontend.tag_rules import tag_rules

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Bigger than the inference API's own limit, so that one answers 413 with its reason.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_QUEUE_PAGE = 100

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def error_response(status: int, code: str, message: str) -> Response:
    """The contracts §5 error body."""
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    return response


class QueryError(ValueError):
    """A bad query-string parameter (answered with 400)."""


def _query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {raw[:20]!r}") from None
    if not minimum <= value <= maximum:
        raise QueryError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def create_app(settings: UISettings, titles: list[str], pool: UpstreamPool | None = None) -> Flask:
    """Build the app; `titles` is the queue (loaded once by the caller, shared by workers)."""
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    if settings.proxy_hops:
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    upstreams = pool or UpstreamPool(
        settings.upstreams,
        settings.upstream_timeout_seconds,
        pool_size=settings.threads,
        on_attempt=metrics.count_upstream,
    )
    client_config = {
        "model_poll_seconds": settings.model_poll_seconds,
        "queue_size": len(titles),
        "tag_rules": tag_rules(),
    }

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.observe(request.method, route, response.status_code, seconds)
        log.log(
            logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "upstream": g.get("upstream"),
            },
        )
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        response = error_response(error.code or 500, code, error.description or error.name)
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(QueryError)
    def query_error(error: QueryError) -> Response:
        return error_response(400, "invalid_query", str(error))

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

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

    @app.route("/api/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    def api(rest: str) -> Response:
        """Forward to an inference replica; answer with its status, body and headers."""
        path = quote(request.path, safe="/:@!$&'()*+,;=-._~")
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        forwarded = {
            "X-Forwarded-For": request.remote_addr or "",
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-Host": request.host,
        }
        try:
            answer = upstreams.forward(
                request.method, path, request.get_data(cache=False), request.headers, forwarded
            )
        except UpstreamError as error:
            log.warning("no upstream answered %s %s: %s", request.method, request.path, error)
            response = error_response(error.status, error.code, error.message)
            response.headers["Retry-After"] = "5"
            return response
        g.upstream = answer.upstream
        return Response(answer.body, status=answer.status, headers=answer.headers)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready once built: the page works (and explains outages) without any replica."""
        return jsonify(status="ready", upstreams=len(settings.upstreams))

    @app.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return app
