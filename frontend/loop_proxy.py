"""The UI's `/api/*` proxy without a thread: the upstream exchange in the worker's main loop.

Through the UI, a prediction used to hold one of a worker's threads for the
whole upstream round trip, and paid gunicorn's thread hand-off, request parsing
and answer writing on top of the proxy itself (issue 19). Here the buffered
worker's main loop hands a complete request it has parsed (an `Exchange`) to
`LoopProxy`; for an exact inference route (`fast_api.fast_route`) it sends the
request on a kept-alive upstream connection from the shared pool, waits for the
answer in the worker's poller (`UpstreamExchange`, parsed by the same
`http1.AnswerParser` as the blocking client), and then has the app answer
inline with that outcome in the environ (`fast_api.PREFETCHED_KEY`): status,
headers, cookie, access log and metrics are built by `FastApi` as on the
thread path, and the request's duration counts from its start here
(`httpmetrics.STARTED_KEY`).

Everything else takes the ordinary thread path (`exchange.to_thread()`), so
the failover rules stay in one place (`proxy.UpstreamPool`): a TLS upstream or
none with an idle connection (the thread connects to the upstream whose turn
it was, so that the round-robin holds; its connection then stays in the pool
for the loop), and a connection that broke on the loop's attempt
(the thread goes on to the other upstreams, without repeating the request
again: `fast_api.HandOvers`). An upstream too slow to answer is the
504 the thread path gives, here without holding a thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from frontend.edge import Edge
from frontend.fast_api import PREFETCHED_KEY, HandOver, HandOvers, fast_route, upstream_path
from frontend.http1 import RECV_BYTES, AnswerParser, Connection, RawAnswer, ResponseBroken
from frontend.proxy import Attempt, UpstreamPool
from tagloop.web import httpmetrics
from tagloop.web.forwarding import ProxyChain, TrustedProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

Outcome = RawAnswer | OSError
"""What an upstream exchange ends with: the answer, or why there is none."""


class Timers(Protocol):
    def expire_at(self, deadline: float, callback: Callable[[], None]) -> None: ...


class Exchange(Protocol):
    """What this handler uses of the worker's view of one complete request
    (tagloop.web.main_loop.Exchange)."""

    @property
    def environ(self) -> WSGIEnvironment: ...

    @property
    def conn(self) -> Any: ...

    @property
    def worker(self) -> Timers: ...

    @property
    def poller(self) -> selectors.BaseSelector: ...

    def respond(self) -> None: ...

    def to_thread(self) -> None: ...

    def abort(self) -> None: ...


class UpstreamExchange:
    """One request sent and its answer read on a non-blocking connection, in a poller.

    `done` is called once, with the answer or the error: an `OSError` while
    sending or reading, `ResponseBroken` for a bad or cut-short answer,
    `TimeoutError` once `timeout` seconds pass without a byte of the answer
    (as the blocking client's socket timeout). The connection's bytes past
    the answer stay in its buffer; closing or keeping it is the caller's.
    """

    def __init__(
        self,
        connection: Connection,
        request: bytes,
        poller: selectors.BaseSelector,
        timeout: float,
        done: Callable[[Outcome], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection = connection
        self.poller = poller
        self.timeout = timeout
        self.done = done
        self.clock = clock
        self.deadline = clock() + timeout
        self.finished = False
        self._unsent = memoryview(request)
        self._parser = AnswerParser(head_only=request.startswith(b"HEAD "), buffer=b"")
        self._registered = False

    def start(self) -> None:
        """Send what the socket takes now; the rest, and the answer, as the poller says."""
        self._send()

    def expire(self, now: float) -> None:
        """Fail with `TimeoutError` if the deadline has passed (a timer calls this)."""
        if not self.finished and now >= self.deadline:
            self._finish(TimeoutError(errno.ETIMEDOUT, "no answer in time"))

    def _watch(self, events: int, callback: Callable[[Any], None]) -> None:
        sock = self.connection.sock
        if self._registered:
            self.poller.modify(sock, events, callback)
        else:
            self.poller.register(sock, events, callback)
            self._registered = True

    def _send(self, _sock: object = None) -> None:
        try:
            sent = self.connection.sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._finish(error)
            return
        self._unsent = self._unsent[sent:]
        if self._unsent:
            self._watch(selectors.EVENT_WRITE, self._send)
            return
        self.deadline = self.clock() + self.timeout
        self._watch(selectors.EVENT_READ, self._receive)

    def _receive(self, _sock: object = None) -> None:
        try:
            chunk = self.connection.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._finish(error)
            return
        try:
            answer = self._parser.feed(chunk) if chunk else self._parser.end()
        except ResponseBroken as error:
            self._finish(error)
            return
        except Exception:  # a parser bug must not stop the worker's loop: a broken answer
            log.exception("upstream answer not understood")
            self._finish(ResponseBroken("answer not understood"))
            return
        if answer is None:
            self.deadline = self.clock() + self.timeout
            return
        self.connection.buffer = self._parser.buffer
        self._finish(answer)

    def _finish(self, outcome: Outcome) -> None:
        self.finished = True
        if self._registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(self.connection.sock)
            self._registered = False
        self.done(outcome)


class LoopProxy:
    """The UI app's main-loop handler: proxied routes fetched without a thread (module docstring)."""

    def __init__(
        self,
        upstreams: UpstreamPool,
        edge: Edge,
        proxy: ProxyChain,
        max_body_bytes: int,
        timeout_seconds: float,
        handovers: HandOvers,
    ) -> None:
        self.upstreams = upstreams
        self.edge = edge
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self.handovers = handovers
        self._proxy_fix = TrustedProxyFix(_answer_nothing, proxy) if proxy.enabled else None
        self._in_flight: set[UpstreamExchange] = set()
        self._sweep_due: float | None = None
        """When the timer that times out overdue exchanges runs (None: none armed)."""

    def __call__(self, exchange: Exchange) -> None:
        environ = exchange.environ
        matched = fast_route(environ, self.max_body_bytes)
        if matched is None:
            exchange.to_thread()
            return
        started = time.perf_counter()
        route, length = matched
        try:
            body = environ["wsgi.input"].read(length) if length else b""
            seen = self._as_the_app_sees(environ)
            path = upstream_path(route, environ)
            method: str = environ["REQUEST_METHOD"]
            attempt = self.upstreams.prepare(method, path, body, seen, self.edge.forwarded(seen))
        except Exception:  # a bug: the thread path answers it (500) as it always did
            log.exception("main-loop proxy could not prepare %s; left to a thread", route)
            exchange.to_thread()
            return
        upstream = self.upstreams.order()[0]
        connection = self.upstreams.idle_connection(upstream)
        if connection is None:  # a thread connects, starting at the upstream of this turn
            self.handovers.leave(exchange.conn.sock, HandOver(started, upstream, broken=False))
            exchange.to_thread()
            return
        environ[httpmetrics.STARTED_KEY] = started
        proxied = _Proxied(self, exchange, attempt, upstream, connection, started)
        upstream_exchange = UpstreamExchange(
            connection,
            self.upstreams.encoded(attempt, upstream),
            exchange.poller,
            self.timeout_seconds,
            proxied.done,
        )
        self._in_flight.add(upstream_exchange)
        proxied.upstream_exchange = upstream_exchange
        upstream_exchange.start()
        if not upstream_exchange.finished:
            self._arm(exchange.worker, upstream_exchange.deadline)

    def _arm(self, timers: Timers, deadline: float) -> None:
        """One timer at a time, at the earliest deadline in flight (the worker checks its
        timers about once a second), rather than one per request."""
        if self._sweep_due is not None and self._sweep_due <= deadline:
            return
        self._sweep_due = deadline
        timers.expire_at(deadline, lambda: self._sweep(timers, deadline))

    def _sweep(self, timers: Timers, due: float) -> None:
        """Time out the overdue exchanges; re-arm for the others."""
        if self._sweep_due == due:
            self._sweep_due = None
        now = time.monotonic()
        for upstream_exchange in list(self._in_flight):
            upstream_exchange.expire(now)
        if self._in_flight:
            self._arm(timers, min(ux.deadline for ux in self._in_flight))

    def finished(self, upstream_exchange: UpstreamExchange | None) -> None:
        if upstream_exchange is not None:
            self._in_flight.discard(upstream_exchange)

    def _as_the_app_sees(self, environ: WSGIEnvironment) -> WSGIEnvironment:
        """The environ after the trusted-proxy rules the app applies (a copy; the original is
        the app's to change), which the forwarded headers are read from."""
        if self._proxy_fix is None:
            return environ
        seen = dict(environ)
        # Rewrites `seen` in place, as for the app; the app behind it starts no answer.
        self._proxy_fix(seen, None)  # type: ignore[arg-type]
        return seen


def _answer_nothing(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """The app behind the trusted-proxy rules when only their changes to the environ count."""
    return []


class _Proxied:
    """One request of a client waiting in the main loop for its upstream's answer."""

    def __init__(
        self,
        proxy: LoopProxy,
        exchange: Exchange,
        attempt: Attempt,
        upstream: str,
        connection: Connection,
        started: float,
    ) -> None:
        self.proxy = proxy
        self.exchange = exchange
        self.attempt = attempt
        self.upstream = upstream
        self.connection = connection
        self.started = started
        self.upstream_exchange: UpstreamExchange | None = None

    def done(self, outcome: Outcome) -> None:
        """Answer with the outcome, or hand the request on; called from the worker's loop, so
        a bug closes this client's connection instead of stopping the worker."""
        self.proxy.finished(self.upstream_exchange)
        try:
            self._settle(outcome)
        except Exception:
            log.exception("main-loop proxy failed on %s; connection closed", self.attempt.path)
            self.exchange.abort()

    def _settle(self, outcome: Outcome) -> None:
        upstreams, exchange, upstream = self.proxy.upstreams, self.exchange, self.upstream
        if isinstance(outcome, RawAnswer):
            if outcome.reusable:
                upstreams.give_back(upstream, self.connection)
            else:
                self.connection.close()
            exchange.environ[PREFETCHED_KEY] = upstreams.answered(upstream, outcome)
            exchange.respond()
            return
        self.connection.close()
        failure = upstreams.failed(self.attempt, upstream, outcome)
        if failure is None:  # broke after it was sent: a thread tries the others
            self.proxy.handovers.leave(
                exchange.conn.sock, HandOver(self.started, upstream, broken=True)
            )
            exchange.to_thread()
            return
        exchange.environ[PREFETCHED_KEY] = failure
        exchange.respond()
