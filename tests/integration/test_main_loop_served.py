"""Main-loop serving under real gunicorn: the same bytes get the same answer either way.

Two servers run the same app (tests/fixtures/main_loop_app.py) on the buffered
worker, one with its routes answered in the main loop, one without. Each
request goes byte for byte to both; the answers must be identical but for the
`Date` header, and the main-loop server must say its answer was made there
whenever the request is in the accepted subset.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tagloop.web.wsgi_server import BUFFERED_WORKER
from tagloop_dev.processes import free_port
from tests.fixtures.main_loop_app import BIG_ANSWER_BYTES
from tests.fixtures.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
BODY = b'{"title": "how to merge two dictionaries in python"}'


def post(target: bytes = b"/echo", *headers: bytes, body: bytes = BODY) -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: test.example", *headers]
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: test.example", *headers]) + (
        b"\r\n\r\n"
    )


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and a Content-Length body) from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    assert len(body) == length, "more than one answer arrived"
    return head + b"\r\n\r\n" + body


def head_but_date_and_length(answer: bytes) -> list[bytes]:
    """The head's lines but those that differ anyway (the echo says who served it)."""
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return [line for line in head if not line.startswith((b"Date: ", b"Content-Length: "))]


def echoed(answer: bytes) -> dict[str, object]:
    return json.loads(answer.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[bool, int]]:
    processes, ports = [], {}
    try:
        for main_loop in (True, False):
            port = free_port()
            app = f"tests.fixtures.main_loop_app:create_app({main_loop})"
            argv = [sys.executable, "-m", "gunicorn", "--worker-class", BUFFERED_WORKER]
            argv += ["--workers", "1", "--threads", "2", "--bind", f"127.0.0.1:{port}", app]
            processes.append(subprocess.Popen([*argv, "--log-level", "warning"], cwd=ROOT))
            ports[main_loop] = port
        for port in ports.values():
            wait_until(partial(exchange, port, [get(b"/echo")]), timeout=30, what=f"port {port}")
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send each request on one kept-alive connection; the answers in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        answers = []
        for data in requests:
            sock.sendall(data)
            answers.append(read_answer(sock))
        return answers


SAME_BYTES = [
    pytest.param([post()], True, id="prediction-like POST"),
    pytest.param([get(b"/echo?q=1&r=two")], True, id="GET with a query"),
    pytest.param([post(b"/echo", b"X-Forwarded-Proto: https")], True, id="forwarded scheme"),
    pytest.param([post(b"/echo", b"Content-Type: application/json", b"Cookie: a=b")], True, id="cookie"),
    pytest.param([post(), get(b"/echo"), post(body=b"")], True, id="three on one connection"),
    pytest.param([post(b"/echo", b"Connection: keep-alive")], True, id="explicit keep-alive"),
    pytest.param([post(b"/ech%6f")], False, id="escaped path: gunicorn's"),
    pytest.param([post(b"/echo", b"X_Forwarded_For: 6.6.6.6")], False, id="underscore header"),
    pytest.param([post(b"/echo", b"X-Note: caf\xc3\xa9")], False, id="non-ASCII value"),
    pytest.param([post(), post(b"/ech%6f"), post()], None, id="mixed ways, one connection"),
]  # fmt: skip


@pytest.mark.parametrize(("requests", "in_main_loop"), SAME_BYTES)
def test_the_same_request_gets_the_same_answer_either_way(
    servers: dict[bool, int], requests: list[bytes], in_main_loop: bool | None
) -> None:
    fast, ordinary = exchange(servers[True], requests), exchange(servers[False], requests)
    for ours, theirs in zip(fast, ordinary, strict=True):
        ours_echo, theirs_echo = echoed(ours), echoed(theirs)
        assert theirs_echo.pop("served_by") == "BoundedSocket"
        served_by = ours_echo.pop("served_by")
        if in_main_loop is not None:
            assert served_by == ("_Collector" if in_main_loop else "BoundedSocket")
        assert ours_echo == theirs_echo
        assert head_but_date_and_length(ours) == head_but_date_and_length(theirs)


def test_a_connection_close_request_is_answered_and_closed(servers: dict[bool, int]) -> None:
    with socket.create_connection(("127.0.0.1", servers[True]), timeout=10) as sock:
        sock.sendall(post(b"/echo", b"Connection: close"))
        answer = read_answer(sock)
        assert b"Connection: close" in answer and echoed(answer)["served_by"] == "BoundedSocket"
        assert sock.recv(1) == b""


def test_a_client_that_does_not_read_holds_neither_the_loop_nor_its_answer(
    servers: dict[bool, int],
) -> None:
    with socket.create_connection(("127.0.0.1", servers[True]), timeout=10) as stalled:
        stalled.sendall(get(b"/big"))  # 8 MB: more than the socket buffers hold unread
        # Meanwhile the same worker answers others, in its main loop.
        for answer in exchange(servers[True], [post(), post()]):
            assert echoed(answer)["served_by"] == "_Collector"
        answer = read_answer(stalled)  # the rest comes once the client reads
        assert answer.endswith(b"x" * 1000) and len(answer.partition(b"\r\n\r\n")[2]) == (
            BIG_ANSWER_BYTES
        )
        assert echoed(exchange(servers[True], [get(b"/echo")])[0])["served_by"] == "_Collector"
