"""Hot routes answered in the gunicorn worker's main loop, without a thread or gunicorn's parser.

A request through gthread pays for two things a JSON API call does not need:
the hand-over to a pool thread and back (a future, a condition variable, a
pipe write to wake the main loop, GIL hand-offs) and gunicorn's general HTTP
parser (every header through the full policy, forwarded-address checks that
parse IP networks per request). On a replica that was as much CPU as the
prediction itself (issue 19, benchmarks/results/serving.md).

So the buffered worker (buffered_worker.py), once it holds a complete request,
first offers it here. `RequestReader.parse` accepts only a narrow, plainly
well-formed subset of HTTP/1.1: a route the app registered with
`serve_in_main_loop`, an origin-form target without percent-escapes, token
header names without underscores, printable ASCII values, no repeated field,
no `Transfer-Encoding`/`Expect`/`Upgrade`, a body of exactly the declared
length with nothing behind it. For those, gunicorn's parser would produce the
same request (tests/unit/test_main_loop.py checks field by field, with a
Hypothesis search); anything else returns None and takes gunicorn's ordinary
path, unchanged, with gunicorn's own answers to malformed input.

From the parsed request on, it is gunicorn's code again: the WSGI environ is
built by `gunicorn.http.wsgi.create`, the answer by gunicorn's `Response`
(written into memory, then sent in one non-blocking write), the access log and
request hooks as gthread's `handle_request` calls them. A client that does
not read its answer cannot hold the loop: what does not fit in the socket
buffer is written as the poller reports room, within `buffered_worker`'s I/O
deadline.

An app's handler gets an `Exchange`: CPU-only routes call `respond` at once
(the replica's prediction); a route that must wait for something else (the
UI's proxy) registers its own sockets in `poller` and responds later, or hands
the request to the ordinary thread path with `to_thread`.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from gunicorn.http import wsgi
from gunicorn.http.message import _ip_in_allow_list

if TYPE_CHECKING:
    import selectors

log = logging.getLogger(__name__)

ROUTES_KEY = "tagloop.main_loop_routes"
"""Where `serve_in_main_loop` puts an app's routes (in Flask's `app.extensions`)."""
MAX_BODY_BYTES = 64 * 1024
"""Larger bodies are read and answered by a pool thread: the loop must stay responsive."""
TRUSTED_PEERS_CACHED = 1024

_REQUEST_LINE = re.compile(
    rb"([A-Z]{3,20}) (/(?!/)[A-Za-z0-9/._~!$&'()*+,;=:@-]*)(?:\?([A-Za-z0-9/._~!$&'()*+,;=:@?-]*))?"
    rb" HTTP/1\.1"
)
_FIELD_NAME = re.compile(rb"[A-Za-z0-9-]+")
_NOT_PRINTABLE = re.compile(rb"[^\t\x20-\x7e]")
_END_OF_HEAD = b"\r\n\r\n"
_REFUSED_FIELDS = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS"})


class Handler(Protocol):
    def __call__(self, exchange: Exchange) -> None: ...


def serve_in_main_loop(app: Any, routes: Mapping[tuple[str, str], Handler]) -> None:
    """Have the buffered worker answer these (method, path) routes in its main loop."""
    app.extensions[ROUTES_KEY] = dict(routes)


def main_loop_routes(app: Any) -> dict[tuple[str, str], Handler]:
    """The routes an app registered (none for a plain WSGI app)."""
    extensions = getattr(app, "extensions", None)
    return dict(extensions.get(ROUTES_KEY, {})) if isinstance(extensions, dict) else {}


def respond(exchange: Exchange) -> None:
    """The handler of a route whose answer needs nothing but CPU: answer it now."""
    exchange.respond()


class SimpleRequest:
    """What gunicorn's `Request` gives `wsgi.create`, `Response`, the hooks and the access
    log, for a request `RequestReader.parse` accepted."""

    fragment = ""
    proxy_protocol_info = None
    _expected_100_continue = False
    version = (1, 1)

    def __init__(
        self,
        method: str,
        uri: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        scheme: str,
    ) -> None:
        self.method = method
        self.uri = uri
        self.path = uri.partition("?")[0]
        self.query = query
        self.headers = headers
        self.body = io.BytesIO(body)
        self.scheme = scheme
        self.must_close = False

    def force_close(self) -> None:
        self.must_close = True

    def should_close(self) -> bool:
        """HTTP/1.1 without `Connection: close` (parse refuses that): only a forced close."""
        return self.must_close


class RequestReader:
    """Parses the requests of an app's main-loop routes under one gunicorn configuration."""

    def __init__(self, cfg: Any, routes: Iterable[tuple[str, str]]) -> None:
        self.cfg = cfg
        self.routes = frozenset(routes)
        # TLS, the PROXY protocol and HTTP/2 cleartext change what the bytes mean: gunicorn's.
        self.enabled = (
            bool(self.routes)
            and not cfg.is_ssl
            and cfg.proxy_protocol == "off"
            and cfg.http2_cleartext == "off"
            and cfg.protocol == "http"
        )
        self.line_limit = cfg.limit_request_line
        self.field_limit = cfg.limit_request_field_size
        self.fields_limit = cfg.limit_request_fields
        self.secure_scheme_headers: dict[str, str] = dict(cfg.secure_scheme_headers)
        self._trusted: dict[str, bool] = {}

    def trusted(self, peer: Any) -> bool:
        """Whether gunicorn lets this peer set the scheme headers (forwarded_allow_ips); the
        answer depends only on the address and the configuration, so it is cached."""
        if not isinstance(peer, tuple):
            return True
        address = peer[0]
        known = self._trusted.get(address)
        if known is None:
            known = _ip_in_allow_list(
                address, self.cfg.forwarded_allow_ips, self.cfg.forwarded_allow_networks()
            )
            if len(self._trusted) >= TRUSTED_PEERS_CACHED:
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def parse(self, data: bytes, peer: Any) -> SimpleRequest | None:
        """The request in `data` if it is in the accepted subset (module docstring), else None."""
        end = data.find(_END_OF_HEAD)
        if end < 0 or not self.enabled:
            return None
        lines = data[:end].split(b"\r\n")
        line = lines[0]
        if self.line_limit > 0 and len(line) > self.line_limit:
            return None
        matched = _REQUEST_LINE.fullmatch(line)
        if matched is None:
            return None
        method, path, query = (part.decode("ascii") if part else "" for part in matched.groups())
        if (method, path) not in self.routes or len(lines) - 1 > self.fields_limit:
            return None
        fields = self._fields(lines[1:], peer)
        if fields is None:
            return None
        headers, length, scheme = fields
        body_start = end + len(_END_OF_HEAD)
        if length is None and method in ("POST", "PUT", "PATCH"):
            return None  # gunicorn reads such a body to the end of the connection
        if len(data) != body_start + (length or 0) or (length or 0) > MAX_BODY_BYTES:
            return None
        uri = path if matched.group(3) is None else f"{path}?{query}"
        return SimpleRequest(method, uri, query, headers, data[body_start:], scheme)

    def _fields(
        self, lines: list[bytes], peer: Any
    ) -> tuple[list[tuple[str, str]], int | None, str] | None:
        """(headers as gunicorn lists them, Content-Length, scheme) or None."""
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        length: int | None = None
        scheme = "http"
        scheme_fields = 0
        for line in lines:
            if self.field_limit > 0 and len(line) + 2 > self.field_limit:
                return None
            raw_name, colon, raw_value = line.partition(b":")
            if not colon or not _FIELD_NAME.fullmatch(raw_name):
                return None
            value_bytes = raw_value.strip(b" \t")
            if _NOT_PRINTABLE.search(value_bytes):
                return None
            name, value = raw_name.decode("ascii").upper(), value_bytes.decode("ascii")
            if name in seen or name in _REFUSED_FIELDS:
                return None
            seen.add(name)
            if name == "CONTENT-LENGTH":
                if not value.isdigit() or len(value) > 12:
                    return None
                length = int(value)
            elif name == "CONNECTION":
                if value.lower() != "keep-alive":
                    return None  # "close" and the rest: gunicorn's path closes as it should
            elif name in self.secure_scheme_headers and self.trusted(peer):
                scheme_fields += 1
                scheme = "https" if value == self.secure_scheme_headers[name] else "http"
            headers.append((name, value))
        if scheme_fields > 1:
            return None  # gunicorn refuses conflicting ones; let it decide
        return headers, length, scheme


class _Collector:
    """A socket stand-in for gunicorn's `Response`: the answer is gathered in memory."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.parts)


class Loop(Protocol):
    """What an `Exchange` needs of the worker (buffered_worker.BufferedThreadWorker)."""

    poller: selectors.BaseSelector
    alive: bool
    nr: int
    max_requests: int
    max_keepalived: int
    keepalived_conns: Any
    cfg: Any
    log: Any
    wsgi: Callable[..., Iterable[bytes]]

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None: ...

    def send_answer(self, conn: Any, data: bytes, keepalive: bool) -> None: ...

    def abandon(self, conn: Any) -> None: ...

    def serve_in_thread(self, conn: Any, data: bytes) -> None: ...

    def expire_at(self, deadline: float, callback: Callable[[], None]) -> None: ...


class Exchange:
    """One request being served in the main loop (module docstring)."""

    def __init__(self, worker: Loop, conn: Any, request: SimpleRequest, data: bytes) -> None:
        self.worker = worker
        self.conn = conn
        self.request = request
        self._data = data
        self._out = _Collector()
        self.started = datetime.now()
        self.response, self.environ = wsgi.create(
            request, self._out, conn.client, conn.server, worker.cfg
        )
        self.environ["wsgi.multithread"] = True  # as gthread's handle_request sets it

    @property
    def poller(self) -> selectors.BaseSelector:
        return self.worker.poller

    def expire_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Have `callback` run in the main loop once `time.monotonic()` passes `deadline`
        (checked about once a second)."""
        self.worker.expire_at(deadline, callback)

    def to_thread(self) -> None:
        """Serve the request the ordinary way instead (a pool thread, gunicorn's parser)."""
        self.worker.serve_in_thread(self.conn, self._data)

    def abort(self) -> None:
        """Close the client's connection unanswered (a handler that cannot go on: its bug)."""
        self.worker.abandon(self.conn)

    def respond(self) -> None:
        """Run the app on `environ` and send its answer, as gthread's `handle_request` does."""
        worker, request, response = self.worker, self.request, self.response
        try:
            worker.cfg.pre_request(worker, request)
            keepalive = self._run(worker, request, response)
        except Exception as error:  # what gthread's `handle` does with an app's failure
            if response.headers_sent:
                worker.log.exception("Error handling request")
            else:
                worker.handle_error(request, self._out, self.conn.client, error)
            keepalive = False
        finally:
            try:
                worker.cfg.post_request(worker, request, self.environ, response)
            except Exception:
                worker.log.exception("Exception in post_request hook")
        worker.send_answer(self.conn, self._out.data(), keepalive)

    def _run(self, worker: Loop, request: SimpleRequest, response: Any) -> bool:
        worker.nr += 1
        if worker.nr >= worker.max_requests:
            if worker.alive:
                worker.log.info("Autorestarting worker after current request.")
                worker.alive = False
            response.force_close()
        crowded = len(worker.keepalived_conns) >= worker.max_keepalived
        if not worker.alive or not worker.cfg.keepalive or crowded:
            response.force_close()
        answer = worker.wsgi(self.environ, response.start_response)
        try:
            for item in answer:
                response.write(item)
            response.close()
        finally:
            worker.log.access(response, request, self.environ, datetime.now() - self.started)
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        return not response.should_close()


def reader_for(app: Any, cfg: Any) -> tuple[RequestReader, dict[tuple[str, str], Handler]]:
    """The parser and handlers of an app's main-loop routes."""
    routes = main_loop_routes(app)
    return RequestReader(cfg, routes), routes
