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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3 import connection_from_url
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util import Timeout
from werkzeug.datastructures import Headers

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

# Request headers worth passing on; everything else (cookies, auth of the UI
# origin, hop-by-hop headers) stays at the edge.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Accept-Language", "X-Request-ID")

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

CONNECT_TIMEOUT_SECONDS = 2.0
DOWN_SECONDS = 5.0


class UpstreamError(Exception):
    """No upstream produced an answer; `status`/`code` become the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
        # urllib3's pools directly (no requests.Session layers: they cost more CPU than the
        # replica's whole answer), kept-alive connections, no proxy from the environment.
        timeout = Timeout(
            connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds), read=timeout_seconds
        )
        self._pools = {
            upstream: (
                connection_from_url(upstream, maxsize=pool_size, timeout=timeout, retries=False),
                urlsplit(upstream).path,
            )
            for upstream in self.upstreams
        }
        self._on_attempt = on_attempt or (lambda upstream, outcome: None)
        self._clock = clock
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}

    def order(self) -> list[str]:
        """Upstreams to try for the next request: round-robin, recently failed ones last."""
        with self._lock:
            start = next(self._turn) % len(self.upstreams)
            now = self._clock()
            down = {u for u, until in self._down_until.items() if until > now}
        rotated = self.upstreams[start:] + self.upstreams[:start]
        return [u for u in rotated if u not in down] + [u for u in rotated if u in down]

    def _mark(self, upstream: str, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._down_until.pop(upstream, None)
            else:
                self._down_until[upstream] = self._clock() + DOWN_SECONDS

    def forward(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str] | Headers,
        forwarded: Mapping[str, str],
    ) -> Answer:
        """Send one request and return the first upstream answer.

        `path` is one of `ROUTES`, followed by the query string; of the
        client's `headers` only the content-negotiation ones pass; `forwarded`
        (X-Forwarded-*) is added as is.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        sent = {n: lowered[n.lower()] for n in FORWARDED_REQUEST_HEADERS if n.lower() in lowered}
        sent.update(forwarded)
        sent["Accept-Encoding"] = "identity"
        repeatable = (method, path.partition("?")[0]) in SAFE_TO_REPEAT
        for upstream in self.order():
            pool, prefix = self._pools[upstream]
            try:
                response = pool.urlopen(
                    method,
                    prefix + path,
                    body=body or None,
                    headers=sent,
                    redirect=False,
                    assert_same_host=False,
                    decode_content=False,
                )
            except (NewConnectionError, ConnectTimeoutError):
                # NewConnectionError is a ConnectTimeoutError: the request never left.
                self._mark(upstream, healthy=False)
                self._on_attempt(upstream, "connect_error")
                continue
            except ReadTimeoutError as error:
                self._on_attempt(upstream, "timeout")
                raise UpstreamError(
                    504, "upstream_timeout", "The tagging service took too long to answer."
                ) from error
            except (ProtocolError, OSError) as error:
                self._on_attempt(upstream, "broken")
                self._mark(upstream, healthy=False)
                if repeatable:
                    repeatable = False  # once: a request that breaks replicas must not visit all
                    continue
                raise UpstreamError(
                    502, "upstream_failed", "The tagging service dropped the connection."
                ) from error
            self._mark(upstream, healthy=True)
            self._on_attempt(upstream, "ok")
            kept = [
                (name, value)
                for name, value in response.headers.items()
                if name.lower() not in DROPPED_RESPONSE_HEADERS
            ]
            return Answer(response.status, response.data, kept, upstream)
        raise UpstreamError(
            503, "upstream_unavailable", "The tagging service cannot be reached right now."
        )

    def close(self) -> None:
        for pool, _ in self._pools.values():
            pool.close()
