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


def test_a_second_sigquit_inside_the_first_does_not_deadlock() -> None:
    """A process-group stop delivers SIGQUIT twice; the second handler run can start inside
    the first, while it holds the thread pool's shutdown lock."""
    cfg = Config()
    worker = BufferedThreadWorker(0, os.getppid(), [], None, 30, cfg, logging.getLogger("test"))
    worker.tpool = ThreadPoolExecutor(1)
    shutdown = worker.tpool.shutdown
    nested: list[str] = []

    def shutdown_interrupted(wait: bool = True, *, cancel_futures: bool = False) -> None:
        with worker.tpool._shutdown_lock:  # where the second signal arrived in the real hang
            if not nested:
                nested.append("second SIGQUIT")
                worker.handle_quit(signal.SIGQUIT, None)  # would wait forever on the lock
        shutdown(wait=wait, cancel_futures=cancel_futures)

    worker.tpool.shutdown = shutdown_interrupted  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        worker.handle_quit(signal.SIGQUIT, None)
    assert nested == ["second SIGQUIT"] and not worker.alive
