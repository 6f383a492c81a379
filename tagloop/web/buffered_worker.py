"""A gunicorn gthread worker whose threads only ever see complete requests.

gunicorn's gthread worker gives each new connection a thread that waits up to
5 s for a first byte and then reads the request head with a blocking socket and
no deadline: a handful of clients that open connections and send nothing, or
send a header a byte at a time, hold every thread of a worker and the service
stops answering (issue 11, reproduction 7). This worker keeps gthread's model
(a small thread pool for CPU-bound requests, keep-alive connections parked in
the main loop's poller) and moves the reading of each request into that main
loop: bytes are collected without blocking until the head (and a body of
declared length, up to `BODY_BUFFER_BYTES`) is complete, and only then is the
connection handed to a thread. A request that is not complete within
`REQUEST_HEAD_SECONDS` gets 408 and is closed. Whatever a thread still reads or
writes (a larger or chunked body, the answer to a client that does not read)
waits at most `SOCKET_IO_SECONDS` per call, and a stalled client then counts as
gone. Connections per worker stay bounded by gunicorn's `worker_connections`.

TLS connections are served exactly as gthread does (the bytes must be
decrypted in a thread); tagloop terminates TLS in front of its services.
"""

from __future__ import annotations

import contextlib
import errno
import re
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

REQUEST_HEAD_SECONDS = 10.0
"""From a connection's first byte (or its opening) to a complete request head."""
SOCKET_IO_SECONDS = 10.0
"""Longest wait of a request thread for one read or write on a client socket."""
BODY_BUFFER_BYTES = 1024 * 1024
"""Bodies of declared length up to this are read before a thread is involved."""
MAX_HEAD_BYTES = 64 * 1024
"""A head this long is handed over as is: gunicorn's parser refuses it (400/431)."""
READ_BYTES = 64 * 1024

_END_OF_HEAD = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?$", re.I | re.M)
_NEEDS_THREAD = re.compile(
    rb"^(transfer-encoding[ \t]*:|expect[ \t]*:[ \t]*100-continue)", re.I | re.M
)
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b'Content-Length: 75\r\n\r\n{"error": {"code": "request_timeout", "message": "request not complete"}}\n'
)


class BoundedSocket(socket.socket):
    """A client socket on which "blocking" means "blocking for at most SOCKET_IO_SECONDS".

    gunicorn switches client sockets to blocking mode before a thread reads
    the request or writes the answer; here that sets a timeout instead, and a
    client that stalls past it is treated as one that hung up (EOF on read,
    connection reset on write), which gunicorn handles quietly.
    """

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(SOCKET_IO_SECONDS)
        else:
            super().setblocking(False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            return b""

    def sendall(self, data: Any, flags: int = 0) -> None:
        try:
            super().sendall(data, flags)
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "client stopped reading") from None


def bounded(sock: socket.socket) -> BoundedSocket:
    """The same connection as a `BoundedSocket` (the descriptor moves over)."""
    return BoundedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())


def request_complete(data: bytes | bytearray) -> bool:
    """Whether `data` holds enough of a request for a thread never to wait on the client."""
    end = data.find(_END_OF_HEAD)
    if end < 0:
        return len(data) >= MAX_HEAD_BYTES
    head = bytes(data[:end])
    if _NEEDS_THREAD.search(head):
        return True  # chunked or 100-continue bodies are read by the thread, bounded per call
    length = _CONTENT_LENGTH.search(head)
    body = min(int(length.group(1)), BODY_BUFFER_BYTES) if length else 0
    return len(data) >= end + len(_END_OF_HEAD) + body


class _Pending:
    """A connection whose request is being collected in the main loop."""

    __slots__ = ("conn", "data", "deadline", "done", "registered")

    def __init__(self, conn: TConn, deadline: float, registered: bool) -> None:
        self.conn = conn
        self.data = bytearray()
        self.deadline = deadline
        self.registered = registered
        """Whether the socket is in the worker's poller."""
        self.done = False


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with request collection in the main loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._collecting: dict[int, _Pending] = {}

    def accept(self, listener: socket.socket) -> None:
        if self.cfg.is_ssl:
            super().accept(listener)
            return
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, bounded(client), address, listener.getsockname())
        self._collect(conn, registered=False)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has its next request coming: collect it here too."""
        if self.cfg.is_ssl:
            super().on_client_socket_readable(conn, client)
            return
        self.keepalived_conns.remove(conn)
        self._collect(conn, registered=True)

    def _collect(self, conn: TConn, registered: bool) -> None:
        """Read what is there now (usually the whole request: handed over at once, no poller
        change beyond gthread's own), else wait in the poller for the rest."""
        pending = _Pending(conn, time.monotonic() + REQUEST_HEAD_SECONDS, registered)
        self._collecting[conn.sock.fileno()] = pending
        self._readable(pending, conn.sock)
        if pending.done:
            return
        callback = partial(self._readable, pending)
        if registered:
            self.poller.modify(conn.sock, selectors.EVENT_READ, callback)
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, callback)
            pending.registered = True

    def _readable(self, pending: _Pending, _sock: object) -> None:
        try:
            data = pending.conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(pending, answer=False)
            return
        pending.data += data
        if request_complete(pending.data):
            self._hand_over(pending)

    def _forget(self, pending: _Pending) -> None:
        pending.done = True
        self._collecting.pop(pending.conn.sock.fileno(), None)
        if pending.registered:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(pending.conn.sock)

    def _hand_over(self, pending: _Pending) -> None:
        self._forget(pending)
        conn = pending.conn
        conn.init()  # plain HTTP/1: creates the parser (once per connection), nothing blocks
        conn.parser.unreader.unread(bytes(pending.data))
        conn.data_ready = True
        self.enqueue_req(conn)

    def _drop(self, pending: _Pending, answer: bool) -> None:
        self._forget(pending)
        if answer and pending.data:
            with contextlib.suppress(OSError):
                pending.conn.sock.send(_TIMEOUT_ANSWER)
        self.nr_conns -= 1
        pending.conn.close()

    def murder_pending(self) -> None:
        """Also close the connections whose request did not arrive in time (all, when stopping)."""
        super().murder_pending()
        now = time.monotonic()
        for pending in list(self._collecting.values()):
            if pending.deadline <= now or not self.alive:
                self._drop(pending, answer=True)
