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
from dataclasses import dataclass
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
PREFETCHED_KEY = "tagloop.ui.upstream_outcome"
"""Environ key of the upstream `Answer` (or the `UpstreamError` instead) the UI's main loop
fetched before calling the app (frontend/loop_proxy.py): answered from, not fetched again."""
HAND_OVER_NOTES = 1024
"""At most this many requests handed from the main loop to threads are remembered at once."""


@dataclass(frozen=True)
class HandOver:
    """What the main loop knows of a request it hands to a thread: when the request started,
    and the upstream whose turn it took: its connection to it broke after the request was
    sent (`broken`), or it had no idle connection to it (the thread starts there, so that
    the loop's turn holds and every upstream gets its share and its kept-alive connections)."""

    started: float
    upstream: str
    broken: bool


class HandOvers:
    """`HandOver` notes by client socket, from the main loop to the thread path.

    The thread parses the request again and builds its own environ, which names
    the client's socket (`gunicorn.socket`); the note goes with the request
    there, so the request is not sent to that upstream again and its duration
    counts from its start in the loop. A handed-over request is always one of
    the exact routes, so the thread's `FastApi` takes each note.
    """

    def __init__(self, limit: int = HAND_OVER_NOTES) -> None:
        self._notes: dict[object, HandOver] = {}
        self.limit = limit

    def leave(self, sock: object, note: HandOver) -> None:
        """Keep `note` for the thread; the oldest goes beyond `limit` (a thread that never
        reached the app, as when the worker stops, must not let notes pile up)."""
        while len(self._notes) >= self.limit:
            self._notes.pop(next(iter(self._notes)), None)
        self._notes[sock] = note

    def take(self, environ: WSGIEnvironment) -> HandOver | None:
        if not self._notes:  # the usual case
            return None
        return self._notes.pop(environ.get("gunicorn.socket"), None)


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


def fast_route(environ: WSGIEnvironment, max_body_bytes: int) -> tuple[str, int] | None:
    """The exact inference route and body length of a request this handler answers, else None."""
    route = exact_route(environ)
    length = declared_length(environ, max_body_bytes, absent="0")
    if route is None or environ.get("REQUEST_METHOD", "") not in ROUTES[route] or length is None:
        return None
    return route, length


def upstream_path(route: str, environ: WSGIEnvironment) -> str:
    """The route with the client's query string, as it is sent upstream."""
    query = environ.get("QUERY_STRING")
    return f"{route}?{query}" if query else route


class FastApi:
    """WSGI middleware answering the exact proxied routes (module docstring)."""

    def __init__(
        self, app: WSGIApplication, upstreams: UpstreamPool, edge: Edge, max_body_bytes: int
    ) -> None:
        self.app = app
        self.upstreams = upstreams
        self.edge = edge
        self.max_body_bytes = max_body_bytes
        self.handovers = HandOvers()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        matched = fast_route(environ, self.max_body_bytes)
        if matched is None:
            return self.app(environ, start_response)
        route, length = matched
        method = environ["REQUEST_METHOD"]
        note = self.handovers.take(environ)
        if note is not None:
            environ[httpmetrics.STARTED_KEY] = note.started
        started = environ.get(httpmetrics.STARTED_KEY) or time.perf_counter()
        environ[httpmetrics.ROUTE_KEY] = API_ENDPOINT
        upstream: str | None = None
        path = upstream_path(route, environ)
        try:
            outcome = environ.get(PREFETCHED_KEY) or self._forward(
                environ, method, path, length, note
            )
            if isinstance(outcome, UpstreamError):
                response = upstream_failure(outcome, method, path)
            else:
                upstream = outcome.upstream
                if _plain(outcome):
                    return self._send(environ, start_response, outcome, method, route, started)
                response = relayed(outcome)
        except Exception:
            log.exception("unhandled error on %s %s", method, route)
            response = error_response(500, "internal", "internal server error")
        if self.edge.cookie_annotator(environ) is None:
            response.headers.add("Set-Cookie", self.edge.new_cookie(environ))
        log_request(
            method, route, response.status_code, time.perf_counter() - started, upstream, False
        )
        return response(environ, start_response)

    def _forward(
        self,
        environ: WSGIEnvironment,
        method: str,
        path: str,
        length: int,
        note: HandOver | None,
    ) -> Answer | UpstreamError:
        """The upstreams' answer, or why there is none (after the main loop's broken attempt,
        the others and no repeat; after its turn without a connection, from that upstream)."""
        body = environ["wsgi.input"].read(length) if length else b""
        attempt = self.upstreams.prepare(method, path, body, environ, self.edge.forwarded(environ))
        if note is not None and note.broken:
            attempt.broke_on(note.upstream)
        elif note is not None:
            attempt.first = note.upstream
        try:
            return self.upstreams.forward(attempt)
        except UpstreamError as error:
            return error

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
