"""The UI's `/api/*` proxy as plain WSGI in front of Flask (issue 19).

Every prediction typed in the page passes here, and Flask's per-request
machinery (request and response objects, URL matching, contexts, hooks) cost
the UI more CPU than the replica's whole answer. So a well-formed request for
an exact inference route is answered here from the WSGI environ; everything
else (unknown paths, other methods, bodies over the limit or without a
Content-Length) goes on to Flask, which answers 404, 405, 413, or forwards it
through the `/api/<path:rest>` route.

Both paths share what decides the outcome: the route check
(`proxy.exact_route`), the annotator and forwarded headers and the cookie
(`frontend.edge`), the upstream pool with its failover, repeat-once and timeout
rules, and the JSON error answers. What this handler does itself, it does as
Flask would: the same status line, answer headers (a `Content-Type` default,
`Content-Length`), `Set-Cookie`, access log line and metric labels (the
`/api/<path:rest>` endpoint). Answers werkzeug would rewrite (1xx, 204, 304, a
`Location`) are built by werkzeug's own `Response`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Response

from frontend.edge import Edge, log_request
from frontend.proxy import ROUTES, Answer, UpstreamError, UpstreamPool, exact_route
from tagloop.web import httpmetrics
from tagloop.web.api import declared_length, error_response, status_line

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

API_ENDPOINT = "/api/<path:rest>"
"""The Flask rule of the proxy: the `endpoint` label of its HTTP metrics."""
DEFAULT_CONTENT_TYPE = Response().headers["Content-Type"]
"""What Flask's `Response` adds to an answer that names no type ("text/html; charset=utf-8")."""
_REWRITTEN_HEADERS = frozenset({"location", "content-location"})


def upstream_failure(error: UpstreamError, method: str, path: str) -> Response:
    """The JSON 502/503/504 when no replica produced an answer."""
    log.warning("no upstream answered %s %s: %s", method, path, error)
    return error_response(error.status, error.code, error.message, {"Retry-After": "5"})


def relayed(answer: Answer) -> Response:
    """A replica's answer as Flask's `/api/*` route returns it."""
    return Response(answer.body, status=answer.status, headers=answer.headers)


def _plain(answer: Answer) -> bool:
    """Whether werkzeug would send this answer's headers as they are (plus the length)."""
    if answer.status < 200 or answer.status in (204, 304):
        return False
    return not any(
        name.lower() in _REWRITTEN_HEADERS or "\n" in value or "\r" in value
        for name, value in answer.headers
    )


class FastApi:
    """WSGI middleware answering the exact proxied routes (module docstring)."""

    def __init__(
        self, app: WSGIApplication, upstreams: UpstreamPool, edge: Edge, max_body_bytes: int
    ) -> None:
        self.app = app
        self.upstreams = upstreams
        self.edge = edge
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        route = exact_route(environ)
        length = declared_length(environ, self.max_body_bytes, absent="0")
        if route is None or method not in ROUTES[route] or length is None:
            return self.app(environ, start_response)
        started = time.perf_counter()
        environ[httpmetrics.ROUTE_KEY] = API_ENDPOINT
        upstream: str | None = None
        try:
            body = environ["wsgi.input"].read(length) if length else b""
            query = environ.get("QUERY_STRING")
            path = f"{route}?{query}" if query else route
            try:
                answer = self.upstreams.forward(
                    method, path, body, environ, self.edge.forwarded(environ)
                )
            except UpstreamError as error:
                response = upstream_failure(error, method, path)
            else:
                upstream = answer.upstream
                if _plain(answer):
                    return self._send(environ, start_response, answer, method, route, started)
                response = relayed(answer)
        except Exception:
            log.exception("unhandled error on %s %s", method, route)
            response = error_response(500, "internal", "internal server error")
        if self.edge.cookie_annotator(environ) is None:
            response.headers.add("Set-Cookie", self.edge.new_cookie(environ))
        log_request(
            method, route, response.status_code, time.perf_counter() - started, upstream, False
        )
        return response(environ, start_response)

    def _send(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        answer: Answer,
        method: str,
        route: str,
        started: float,
    ) -> Iterable[bytes]:
        """Start a plain answer without building a `Response` (its headers as werkzeug's)."""
        headers = answer.headers
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", DEFAULT_CONTENT_TYPE))
        headers.append(("Content-Length", str(len(answer.body))))
        if self.edge.cookie_annotator(environ) is None:
            headers.append(("Set-Cookie", self.edge.new_cookie(environ)))
        seconds = time.perf_counter() - started
        log_request(method, route, answer.status, seconds, answer.upstream, False)
        start_response(status_line(answer.status), headers)
        return [] if method == "HEAD" else [answer.body]
