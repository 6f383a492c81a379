"""Forwarding `/api/*` to the inference replicas: round-robin with failover.

Only the inference API's own routes pass (`ROUTES`), each forwarded under its
canonical path: a path the UI would have to decode or normalise first
(`/api/..%2fmetrics`, `/api//model`) is not one of them, so nothing but the
public API is reachable through the UI.

Each request starts at the next upstream in turn. A connection that cannot be
established moves on to the next upstream, and the failed one is tried last
for a few seconds, so a stopped replica costs one refused connection rather
than one per request. A request whose connection broke after it was sent is
sent once more, to another upstream, only when repeating it is safe (reads and
predictions); a feedback POST must not be published twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frontend.http1 import ConnectFailed, Connection, RawAnswer, Upstream

# The inference API (inference_service/openapi.json, a test keeps them equal): path ->
# methods, and whether a request whose connection broke may be sent again.
ROUTES: dict[str, frozenset[str]] = {
    "/api/predict": frozenset({"POST"}),
    "/api/feedback": frozenset({"POST"}),
    "/api/model": frozenset({"GET", "HEAD"}),
    "/api/tags": frozenset({"GET", "HEAD"}),
    "/api/openapi.json": frozenset({"GET", "HEAD"}),
}
SAFE_TO_REPEAT = frozenset(
    {
        ("POST", "/api/predict"),  # a prediction changes nothing
        *((method, path) for path, methods in ROUTES.items() for method in methods - {"POST"}),
    }
)

# Request headers worth passing on, with the WSGI environ keys they arrive in; everything
# else (cookies, auth of the UI origin, hop-by-hop headers) stays at the edge.
FORWARDED_REQUEST_HEADERS = (
    ("Content-Type", "CONTENT_TYPE"),
    ("Accept", "HTTP_ACCEPT"),
    ("Accept-Language", "HTTP_ACCEPT_LANGUAGE"),
    ("X-Request-ID", "HTTP_X_REQUEST_ID"),
)

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the WSGI server recomputes.
DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "server",
        "date",
    }
)

_UNSAFE_IN_HEADER = frozenset("\r\n\0")
CONNECT_TIMEOUT_SECONDS = 2.0
DOWN_SECONDS = 5.0


def exact_route(environ: Mapping[str, Any]) -> str | None:
    """The inference route the request names exactly as the client wrote it, else None.

    The path is compared before percent-decoding (the server's raw request
    URI) and must equal the decoded path Flask routes on, so an encoded or
    dot-segment path can never be turned into another route.
    """
    decoded = "/" + environ.get("PATH_INFO", "").lstrip("/")  # Flask's `request.path`
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or decoded
    path: str = raw.partition("?")[0]
    return path if path in ROUTES and path == decoded else None


class UpstreamError(Exception):
    """No upstream produced an answer; `status`/`code` become the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Attempt:
    """One request on its way to the upstreams."""

    method: str
    path: str
    body: bytes
    headers: list[tuple[str, str]]
    repeatable: bool
    """Whether a broken connection may still be answered by sending it again."""
    failed_upstream: str | None = None
    """The upstream on which it broke (then it is not repeatable any more)."""
    first: str | None = None
    """The upstream whose turn it is, taken already (by the main loop, which had no idle
    connection to it): the attempt starts there instead of taking the next turn."""

    def broke_on(self, upstream: str) -> None:
        """Its connection to `upstream` broke after it was sent: the one repeat is used up."""
        self.repeatable = False
        self.failed_upstream = upstream


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    upstream: str


class UpstreamPool:
    """A pooled HTTP client over several equivalent base URLs."""

    def __init__(
        self,
        upstreams: Iterable[str],
        timeout_seconds: float,
        pool_size: int = 10,
        on_attempt: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstreams = tuple(upstreams)
        # A hand-rolled keep-alive HTTP/1.1 client (frontend/http1.py): urllib3's layers
        # cost more CPU than the replica's whole answer. No proxy from the environment.
        connect = min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        self._pools = {
            upstream: Upstream(upstream, connect, timeout_seconds, pool_size)
            for upstream in self.upstreams
        }
        self._on_attempt = on_attempt or (lambda upstream, outcome: None)
        self._clock = clock
        self._turn = itertools.count()
        self._rotations = [
            self.upstreams[start:] + self.upstreams[:start] for start in range(len(self.upstreams))
        ]
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}

    def order(self, first: str | None = None) -> Sequence[str]:
        """Upstreams to try for the next request: round-robin (from `first` when its turn was
        taken already), recently failed ones last."""
        turn = self.upstreams.index(first) if first else next(self._turn)  # atomic under the GIL
        rotated = self._rotations[turn % len(self.upstreams)]
        if not self._down_until:  # the usual case: no lock, nothing to sort
            return rotated
        with self._lock:
            now = self._clock()
            down = {u for u, until in self._down_until.items() if until > now}
        return [u for u in rotated if u not in down] + [u for u in rotated if u in down]

    def _mark(self, upstream: str, healthy: bool) -> None:
        if healthy and upstream not in self._down_until:
            return  # the usual case: nothing to forget, no lock
        with self._lock:
            if healthy:
                self._down_until.pop(upstream, None)
            else:
                self._down_until[upstream] = self._clock() + DOWN_SECONDS

    def prepare(
        self,
        method: str,
        path: str,
        body: bytes,
        environ: Mapping[str, Any],
        forwarded: Mapping[str, str],
    ) -> Attempt:
        """The request to send upstream.

        `path` is one of `ROUTES`, followed by the query string; of the
        client's headers (read from its WSGI `environ`) only the
        content-negotiation ones pass; `forwarded` (X-Forwarded-*) is added as is.
        """
        # Four lookups, not a pass over all headers.
        sent = [
            (n, v) for n, key in FORWARDED_REQUEST_HEADERS if (v := environ.get(key)) is not None
        ]
        sent.extend(forwarded.items())
        sent.append(("Accept-Encoding", "identity"))
        # Header values come from parsed requests, but a line break must never split one.
        sent = [(n, v) for n, v in sent if not _UNSAFE_IN_HEADER.intersection(v)]
        repeatable = (method, path.partition("?")[0]) in SAFE_TO_REPEAT
        return Attempt(method, path, body, sent, repeatable)

    def encoded(self, attempt: Attempt, upstream: str) -> bytes:
        """The request's bytes as `upstream` gets them."""
        return self._pools[upstream].encoded(
            attempt.method, attempt.path, attempt.body, attempt.headers
        )

    def idle_connection(self, upstream: str) -> Connection | None:
        """A kept-alive plain-HTTP connection to `upstream`, non-blocking, for an exchange in
        the worker's main loop (frontend/loop_proxy.py); None leaves the request to a thread
        (which connects, and whose connection then stays in the pool for the loop's use)."""
        pool = self._pools[upstream]
        connection = None if pool.tls else pool.take_idle()
        if connection is not None:
            connection.sock.setblocking(False)
        return connection

    def give_back(self, upstream: str, connection: Connection) -> None:
        """A main-loop connection whose answer was complete, back in blocking mode."""
        pool = self._pools[upstream]
        connection.sock.settimeout(pool.read_timeout)
        pool.give_back(connection)

    def failed(self, attempt: Attempt, upstream: str, error: OSError) -> UpstreamError | None:
        """Count and judge a failed exchange: None to try the next upstream, else the answer.

        A connection that could not be established moves on; an upstream too slow
        to answer is a 504; a connection that broke after the request was sent is
        sent once more, to another upstream, only if the request is safe to repeat.
        """
        if isinstance(error, ConnectFailed):
            self._mark(upstream, healthy=False)
            self._on_attempt(upstream, "connect_error")
            return None
        if isinstance(error, TimeoutError):  # socket.timeout: sent, no answer in time
            self._on_attempt(upstream, "timeout")
            return UpstreamError(
                504, "upstream_timeout", "The tagging service took too long to answer."
            )
        # ResponseBroken, resets, EOF after the request was sent
        self._on_attempt(upstream, "broken")
        self._mark(upstream, healthy=False)
        if attempt.repeatable:
            attempt.broke_on(upstream)  # once: a request that breaks replicas must not visit all
            return None
        return UpstreamError(502, "upstream_failed", "The tagging service dropped the connection.")

    def answered(self, upstream: str, answer: RawAnswer) -> Answer:
        """Count a good exchange; the answer without its hop-by-hop headers."""
        self._mark(upstream, healthy=True)
        self._on_attempt(upstream, "ok")
        kept = [(n, v) for n, v in answer.headers if n.lower() not in DROPPED_RESPONSE_HEADERS]
        return Answer(answer.status, answer.body, kept, upstream)

    def forward(self, attempt: Attempt) -> Answer:
        """Send one request and return the first upstream answer (`UpstreamError` if none).

        An attempt that already broke on one upstream (`failed_upstream`, on the
        main loop's path) goes on to the others, as if this loop had tried it first.
        """
        for upstream in self.order(attempt.first):
            if upstream == attempt.failed_upstream:
                continue
            pool = self._pools[upstream]
            try:
                answer = pool.request(attempt.method, attempt.path, attempt.body, attempt.headers)
            except OSError as error:
                if (failure := self.failed(attempt, upstream, error)) is not None:
                    raise failure from error
                continue
            return self.answered(upstream, answer)
        raise UpstreamError(
            503, "upstream_unavailable", "The tagging service cannot be reached right now."
        )

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
