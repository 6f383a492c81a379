"""The buffered worker's pieces: when a request is complete, and what a stalled client costs."""

from __future__ import annotations

import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from gunicorn.config import Config

from tagloop.web import buffered_worker
from tagloop.web.buffered_worker import (
    BODY_BUFFER_BYTES,
    MAX_HEAD_BYTES,
    BufferedThreadWorker,
    bounded,
    request_complete,
)

HEAD = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("data", "complete"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (HEAD + b"Content-Length: 5\r\n\r\nabc", False),
        (HEAD + b"Content-Length: 5\r\n\r\nabcde", True),
        (HEAD + b"content-length:5\r\n\r\nabcde", True),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n", True),  # the thread reads it, bounded
        (HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n", True),
        (HEAD + f"Content-Length: {BODY_BUFFER_BYTES * 4}\r\n\r\n".encode(), False),
        (b"GET /" + b"a" * MAX_HEAD_BYTES, True),  # gunicorn's parser refuses it
    ],
)
def test_a_request_is_complete_when_a_thread_never_has_to_wait(data: bytes, complete: bool) -> None:
    assert request_complete(data) is complete


def test_a_large_body_is_handed_over_after_the_buffered_part() -> None:
    head = HEAD + f"Content-Length: {BODY_BUFFER_BYTES * 4}\r\n\r\n".encode()
    assert request_complete(head + b"x" * BODY_BUFFER_BYTES)


def test_a_stalled_client_reads_as_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffered_worker, "SOCKET_IO_SECONDS", 0.05)
    server, client = socket.socketpair()
    with server, client:
        bounded_server = bounded(server)
        with bounded_server:
            bounded_server.setblocking(True)
            assert bounded_server.gettimeout() == 0.05
            assert bounded_server.recv(10) == b""  # nothing came: treated as a hang-up
            with pytest.raises(ConnectionResetError):
                bounded_server.sendall(b"x" * 50_000_000)  # the client never reads


def test_sigquit_never_waits_on_the_thread_pool() -> None:
    """SIGQUIT can land while the main loop holds the thread pool's lock (submitting a
    request), and a process-group stop delivers it twice, the second inside the first."""
    worker = BufferedThreadWorker(0, os.getppid(), [], None, 30, Config(), logging.getLogger("t"))
    worker.tpool = ThreadPoolExecutor(1)
    with worker.tpool._shutdown_lock, pytest.raises(SystemExit):  # held, as in `submit`
        worker.handle_quit(signal.SIGQUIT, None)
    assert not worker.alive
    worker.handle_quit(signal.SIGQUIT, None)  # the second one: no SystemExit, nothing to do
