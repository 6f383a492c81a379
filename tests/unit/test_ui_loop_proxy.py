"""The UI's main-loop handler answers exactly as the Flask route, without a thread for the wait.

`LoopExchange` stands in for the buffered worker's view of one complete
request (tagloop.web.main_loop.Exchange): a WSGI environ, the worker's
selectors poller and timers, `respond()` answering inline and `to_thread()`
serving the request the ordinary way (a new environ for the same request). A
plain selectors loop drives it (the real worker: tests/integration/test_ui_gunicorn.py). Every case is sent to the app with the
handler and to the app whose Flask `/api/<path:rest>` route answers everything
(`fast_api=False`); status, body, answer headers, HTTP metric increments and
access log line must be equal. Real stub upstreams (werkzeug servers), a port
nobody listens on, one that hangs up and one too slow stand in for replicas.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder, run_wsgi_app

from frontend.app import MAX_BODY_BYTES, create_app
from frontend.fast_api import HandOver, HandOvers
from frontend.proxy import UpstreamPool
from frontend.settings import UISettings
from tagloop.web.main_loop import main_loop_routes
from tests.fixtures.pubsub import free_port
from tests.unit.test_ui_fast_api import (
    SECRET,
    Seen,
    _metrics,
    _normalised,
    header_text,
    with_cookie,
)

TITLES = ["a title"]
Request = Callable[[], dict[str, Any]]
"""Builds the WSGI environ of one request, afresh each call (as a server parses it)."""


class Timers:
    """The worker's timers (`expire_at`), run by the test's loop, and its connection count."""

    def __init__(self) -> None:
        self.nr_conns = 1
        self.due: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()

    def expire_at(self, deadline: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self.due, (deadline, next(self.order), callback))

    def run_due(self) -> None:
        while self.due and self.due[0][0] <= time.monotonic():
            heapq.heappop(self.due)[2]()


class LoopExchange:
    """One complete request as the worker's main loop hands it to the app's handler."""

    def __init__(
        self, app: Flask, request: Request, poller: selectors.BaseSelector, worker: Timers
    ) -> None:
        self.app = app
        self.request = request
        self.conn = SimpleNamespace(sock=object(), close=self._close)
        """The client connection; gunicorn names its socket in the environ it builds."""
        self.closed = False
        self.environ = self._environ()
        self.poller = poller
        self.worker = worker
        self.seen_by: str | None = None
        """"loop" (answered by `respond`) or "thread" (`to_thread`)."""
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None

    def _close(self) -> None:
        self.closed = True

    def _environ(self) -> dict[str, Any]:
        return self.request() | {"gunicorn.socket": self.conn.sock}

    def respond(self) -> None:
        self._run(self.environ, "loop")

    def to_thread(self) -> None:
        """As the worker's thread path: the request parsed again, a new environ."""
        self._run(self._environ(), "thread")

    def abort(self) -> None:
        """As the worker's `abandon`: the connection closed and no longer counted."""
        self.worker.nr_conns -= 1
        self._close()

    def _run(self, environ: dict[str, Any], seen_by: str) -> None:
        assert self.answer is None, "answered twice"
        body, status, headers = run_wsgi_app(self.app, environ)
        self.answer = (int(status[:3]), list(headers.items()), b"".join(body))
        self.seen_by = seen_by


def serve_in_loop(app: Flask, request: Request) -> LoopExchange:
    """As the buffered worker: a request for a registered route goes to its handler, then a
    selectors loop runs (with the worker's timers) until it is answered."""
    worker = Timers()
    with selectors.DefaultSelector() as poller:
        exchange = LoopExchange(app, request, poller, worker)
        route = (exchange.environ["REQUEST_METHOD"], exchange.environ["PATH_INFO"])
        handler = main_loop_routes(app).get(route)
        if handler is None:
            exchange.to_thread()
        else:
            handler(exchange)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while exchange.answer is None and not exchange.closed:
            assert time.monotonic() < deadline, "no answer"
            for key, _ in poller.select(0.02):
                key.data(key.fileobj)
            worker.run_due()
        assert not poller.get_map(), "the upstream socket is left in the poller"
    return exchange


def builder(method: str, path: str, **kw: Any) -> Request:
    return lambda: EnvironBuilder(path=path, method=method, **kw).get_environ()


def observed(
    caplog: pytest.LogCaptureFixture, serve: Callable[[], tuple[int, list[Any], bytes]]
) -> Seen:
    before = _metrics()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="frontend.app"):
        status, headers, body = serve()
    after = _metrics()
    after.subtract(before)
    log = [
        (
            record.getMessage(),
            {k: getattr(record, k) for k in ("method", "path", "status", "upstream")},
        )
        for record in caplog.records
        if record.name == "frontend.app"
    ]
    return Seen(
        status,
        body,
        Counter(_normalised(n, v) for n, v in headers),
        {name: value for name, value in after.items() if value},
        log,
        fast_path=True,
    )


class Compared:
    """The app with the handler and the Flask-only reference, each with kept-alive upstream
    connections from a first request (the handler uses only those: a thread connects)."""

    def __init__(self, caplog: pytest.LogCaptureFixture, config: UISettings) -> None:
        self.caplog = caplog
        self.loop_app = create_app(config, TITLES)
        self.flask_app = create_app(config, TITLES, fast_api=False)
        self.last: LoopExchange | None = None
        warm = builder("POST", "/api/predict", data=b"{}")
        for _ in config.upstreams:
            run_wsgi_app(self.flask_app, warm())
            run_wsgi_app(self.loop_app, warm())

    def send(self, method: str, path: str, **kw: Any) -> tuple[Seen, Seen]:
        request = builder(method, path, **kw)

        def loop() -> tuple[int, list[Any], bytes]:
            self.last = serve_in_loop(self.loop_app, request)
            assert self.last.answer is not None
            return self.last.answer

        def flask() -> tuple[int, list[Any], bytes]:
            body, status, headers = run_wsgi_app(self.flask_app, request())
            return int(status[:3]), list(headers.items()), b"".join(body)

        return observed(self.caplog, loop), observed(self.caplog, flask)


@pytest.fixture
def compared(caplog: pytest.LogCaptureFixture) -> Callable[..., Compared]:
    def make(upstream_urls: list[str], **changes: Any) -> Compared:
        base = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": ",".join(upstream_urls)})
        return Compared(caplog, replace(base, annotator_secret=SECRET, **changes))

    return make


def assert_same(seen: tuple[Seen, Seen]) -> Seen:
    loop, flask = seen
    assert loop.status == flask.status
    assert loop.body == flask.body
    assert loop.headers == flask.headers
    assert loop.metrics == flask.metrics
    assert loop.log == flask.log
    return loop


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/api/predict",
            {"data": b'{"title": "h\xc3\xa9llo"}', "content_type": "application/json"},
        ),
        ("POST", "/api/predict?x=1&y=%C3%A9", {"data": b"not json", "content_type": "text/plain"}),
        ("POST", "/api/predict", {"data": b"x" * (MAX_BODY_BYTES - 10)}),  # sent in pieces
        ("GET", "/api/tags", {}),
        ("HEAD", "/api/tags", {}),
        ("POST", "/api/feedback", {"json": {"title": "t", "tags": ["python"]}}),  # a 429
        (
            "POST",
            "/api/predict",
            {
                "json": {"title": "t"},
                "headers": {
                    "X-Request-ID": "req-1",
                    "Accept-Language": "de",
                    "X-Forwarded-For": "6.6.6.6",
                    "X-Tagloop-Annotator": "anon:chosen-by-the-client",
                    "Host": "evil.example:80",
                },
                "environ_base": {"REMOTE_ADDR": "10.1.2.3"},
            },
        ),
        ("GET", "/api/openapi.json?status=201&header=X-Model-Version:v7&body=made", {}),
        ("GET", "/api/openapi.json?status=204", {}),
        ("GET", "/api/openapi.json?status=302&header=Location:/elsewhere", {}),
    ],
)
@pytest.mark.parametrize("cookies", ["valid", "", "other=1", "a=\xbd\xff"])
def test_proxied_routes_are_answered_in_the_loop_as_flask_answers(
    kept_alive_upstreams: list[str],
    compared: Callable[..., Compared],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    cookies: str,
) -> None:
    kwargs, headers = with_cookie(kwargs, cookies)
    both = compared(kept_alive_upstreams[:1])
    loop = assert_same(both.send(method, path, headers=headers, **kwargs))
    assert both.last is not None and both.last.seen_by == "loop"
    assert sum(loop.metrics.values()) == 2 and len(loop.log) == 1
    assert loop.status < 500  # the stubs answer 2xx-4xx; nothing here is the UI's error


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/..%2fmetrics", {}),
        ("GET", "/api/model/", {}),
        ("DELETE", "/api/model", {}),
        ("GET", "/api/predict", {}),
        ("POST", "/api/predict", {"data": b"x" * (MAX_BODY_BYTES + 1)}),
        ("POST", "/api/predict", {"data": b"{}", "headers": {"Transfer-Encoding": "chunked"}}),
        ("GET", "/ui/config", {}),
    ],
)
def test_other_requests_go_to_a_thread_untouched(
    kept_alive_upstreams: list[str],
    compared: Callable[..., Compared],
    method: str,
    path: str,
    kwargs: Any,
) -> None:
    both = compared(kept_alive_upstreams[:1])
    assert_same(both.send(method, path, **kwargs))
    assert both.last is not None and both.last.seen_by == "thread"
    assert not any(key.startswith("tagloop.") for key in both.last.environ)


def test_without_an_idle_upstream_connection_a_thread_connects(
    kept_alive_upstreams: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": kept_alive_upstreams[0]})
    app = create_app(config, TITLES)
    served = [serve_in_loop(app, builder("POST", "/api/predict", data=b"{}")) for _ in range(3)]
    assert [exchange.seen_by for exchange in served] == ["thread", "loop", "loop"]
    assert {exchange.answer[0] for exchange in served if exchange.answer} == {200}


def test_without_idle_connections_the_upstreams_still_take_turns(
    kept_alive_upstreams: list[str],
) -> None:
    """The loop's turn holds when it has no idle connection to that upstream: the thread starts
    there (it once took the next turn, and every request went to the upstream the threads had
    connected to, the other one never getting a connection or a request)."""
    config = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": ",".join(kept_alive_upstreams)})
    app = create_app(config, TITLES)
    served = [serve_in_loop(app, builder("POST", "/api/predict", data=b"{}")) for _ in range(6)]
    upstreams = [
        json.loads(exchange.answer[2])["upstream"] for exchange in served if exchange.answer
    ]
    assert upstreams == ["a", "b"] * 3
    assert [exchange.seen_by for exchange in served] == ["thread", "thread"] + ["loop"] * 4


@pytest.fixture
def answers_once() -> Iterator[str]:
    """An upstream that answers the first request on each connection and hangs up on the next
    (a replica restarting between two requests on a kept-alive connection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    body = b'{"upstream": "x"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def serve(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            connection.sendall(answer)
            connection.recv(65536)

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_upstream_failures_keep_their_meaning(
    kept_alive_upstreams: list[str], answers_once: str, compared: Callable[..., Compared]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cases = [
        # broke on the loop's kept-alive connection: sent once more, to the other, by a thread
        ([answers_once, kept_alive_upstreams[0]], "POST", "/api/predict", {}, 200, "thread"),
        # ... once only: after the loop's broken attempt the thread does not repeat it again
        ([answers_once, answers_once + "/x"], "POST", "/api/predict", {}, 502, "thread"),
        # ... and feedback is never sent twice: the loop answers the 502
        ([answers_once, kept_alive_upstreams[0]], "POST", "/api/feedback", {}, 502, "loop"),
        (
            [kept_alive_upstreams[0]],
            "GET",
            "/api/model",
            {"upstream_timeout_seconds": 0.3},
            504,
            "loop",
        ),
        # the stopped one is tried last for a while: the loop goes to the live one
        ([dead, kept_alive_upstreams[0]], "POST", "/api/predict", {}, 200, "loop"),
    ]
    for urls, method, path, changes, status, seen_by in cases:
        both = compared(urls, **changes)
        loop = assert_same(both.send(method, path, data=b"{}"))
        assert both.last is not None
        assert (loop.status, both.last.seen_by) == (status, seen_by), (urls, path)


def test_the_duration_counts_from_the_loop_s_start(
    kept_alive_upstreams: list[str], release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log and the duration histogram cover the wait for the upstream."""
    config = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": kept_alive_upstreams[0]})
    app = create_app(config, TITLES)
    run_wsgi_app(app, builder("GET", "/api/tags")())  # a kept-alive connection for the loop
    labels = {"endpoint": "/api/<path:rest>", "method": "GET"}
    name = "tagloop_http_request_duration_seconds"

    def fast_and_slow() -> tuple[float, float]:
        """Requests timed, and those timed at 0.25 s or less."""
        count = REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0
        fast = REGISTRY.get_sample_value(f"{name}_bucket", labels | {"le": "0.25"}) or 0.0
        return count, fast

    before = fast_and_slow()
    release.clear()
    threading.Timer(0.4, release.set).start()
    with caplog.at_level(logging.INFO, logger="frontend.app"):
        caplog.clear()
        exchange = serve_in_loop(app, builder("GET", "/api/model"))
    assert exchange.seen_by == "loop"
    count, fast = fast_and_slow()
    assert (count - before[0], fast - before[1]) == (1, 0)  # one request, slower than 0.25 s
    [line] = [record for record in caplog.records if record.name == "frontend.app"]
    assert line.duration_ms >= 300  # type: ignore[attr-defined]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    request_id=header_text,
    forwarded=header_text,
    cookie_header=header_text,
    query=st.text(st.sampled_from("ab=&%2F?é+"), max_size=12),
    body=st.binary(max_size=200),
    trusted_peer=st.booleans(),
)
def test_hostile_requests_are_answered_alike(
    kept_alive_upstreams: list[str],
    compared: Callable[..., Compared],
    request_id: str,
    forwarded: str,
    cookie_header: str,
    query: str,
    body: bytes,
    trusted_peer: bool,
) -> None:
    """With a trusted proxy in front: the loop reads the forwarded headers as the app does."""
    proxy = UISettings.from_env({"TAGLOOP_PROXY_HOPS": "1"}).proxy
    both = compared(kept_alive_upstreams[:1], proxy=proxy)
    seen = both.send(
        "POST",
        "/api/predict?" + query,
        data=body,
        headers={
            "X-Request-ID": request_id,
            "X-Forwarded-For": forwarded,
            "X-Forwarded-Proto": "https",
            "Cookie": cookie_header,
        },
        environ_base={"REMOTE_ADDR": "10.0.0.1" if trusted_peer else "203.0.113.5"},
    )
    assert_same(seen)


def test_a_bug_after_the_upstream_answered_closes_that_connection_only(
    kept_alive_upstreams: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing raised in the worker's loop: the client's connection is closed and counted."""
    config = UISettings.from_env({"TAGLOOP_UI_UPSTREAMS": kept_alive_upstreams[0]})
    app = create_app(config, TITLES)
    run_wsgi_app(app, builder("GET", "/api/tags")())  # a kept-alive connection for the loop

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(UpstreamPool, "answered", broken)
    exchange = serve_in_loop(app, builder("POST", "/api/predict", data=b"{}"))
    assert exchange.closed and exchange.answer is None
    assert exchange.worker.nr_conns == 0


def test_hand_over_notes_stay_bounded() -> None:
    notes = HandOvers(limit=3)
    sockets = [object() for _ in range(5)]
    for number, sock in enumerate(sockets):
        notes.leave(sock, HandOver(float(number), "http://a", broken=True))
    assert notes.take({"gunicorn.socket": sockets[0]}) is None  # the oldest went first
    assert notes.take({"gunicorn.socket": sockets[4]}) == HandOver(4.0, "http://a", broken=True)
    assert notes.take({"gunicorn.socket": sockets[4]}) is None  # taken once
