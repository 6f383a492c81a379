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

A complete request for one of the app's main-loop routes (main_loop.py) is
answered right there, without a thread; everything else goes to a thread as
described.

TLS connections are served exactly as gthread does (the bytes must be
decrypted in a thread); tagloop terminates TLS in front of its services.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import re
import selectors
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import TConn, ThreadWorker

from tagloop.web.main_loop import Exchange, Handler, RequestReader, reader_for

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


class _Writing:
    """An answer the client's socket had no room for yet, written as room appears; the
    client is dropped when it takes nothing for SOCKET_IO_SECONDS."""

    __slots__ = ("conn", "data", "deadline", "keepalive")

    def __init__(self, conn: TConn, data: memoryview, keepalive: bool) -> None:
        self.conn = conn
        self.data = data
        self.keepalive = keepalive
        self.deadline = time.monotonic() + SOCKET_IO_SECONDS


class BufferedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread with request collection in the main loop (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._collecting: dict[int, _Pending] = {}
        self._writing: dict[int, _Writing] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_order = itertools.count()
        self._reader: RequestReader | None = None
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._quitting = False

    def handle_quit(self, sig: int, frame: Any) -> None:
        """The quick exit (SIGQUIT), without touching the thread pool, and once.

        gthread's handler shuts the pool down from inside the signal handler,
        which waits forever on the pool's lock when the signal lands while the
        main thread holds it: while it submits a request, or inside a first
        handler run (a stop of the whole process group delivers SIGQUIT twice,
        from the caller and again from the arbiter). The arbiter then kills the
        worker only after `graceful_timeout`. The pool is shut down the same
        way (no wait for queued work, threads joined) by concurrent.futures'
        exit hook once `sys.exit` unwinds the main thread.
        """
        if self._quitting:
            return
        self._quitting = True
        Worker.handle_quit(self, sig, frame)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self._reader, self._handlers = reader_for(self.wsgi, self.cfg)

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
        data = bytes(pending.data)
        reader = self._reader
        if reader is not None and (request := reader.parse(data, pending.conn.client)):
            try:
                exchange = Exchange(self, pending.conn, request, data)
            except Exception:  # e.g. a SCRIPT_NAME the path lacks: gunicorn's path answers it
                self.serve_in_thread(pending.conn, data)
                return
            try:
                self._handlers[request.method, request.path](exchange)
            except Exception:  # a handler's bug must not stop the loop that serves everyone
                self.log.exception("main-loop handler failed on %s %s", request.method, request.uri)
                self.abandon(pending.conn)
            return
        self.serve_in_thread(pending.conn, data)

    def serve_in_thread(self, conn: TConn, data: bytes) -> None:
        """gthread's way: a pool thread parses and answers the collected request."""
        conn.init()  # plain HTTP/1: creates the parser (once per connection), nothing blocks
        conn.parser.unreader.unread(data)
        conn.data_ready = True
        self.enqueue_req(conn)

    def abandon(self, conn: TConn) -> None:
        """Close a connection whose request cannot be answered (a main-loop handler failed)."""
        self.nr_conns -= 1
        conn.close()

    def send_answer(self, conn: TConn, data: bytes, keepalive: bool) -> None:
        """Send an answer made in the main loop without waiting on the client: what does not
        fit now is written when the poller reports room, within SOCKET_IO_SECONDS."""
        self._write(_Writing(conn, memoryview(data), keepalive), registered=False)

    def _write(self, writing: _Writing, registered: bool) -> None:
        sock = writing.conn.sock
        try:
            sent = sock.send(writing.data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._written(writing, registered, keepalive=False, complete=False)
            return
        if sent:  # the deadline bounds a stall, not the whole answer
            writing.deadline = time.monotonic() + SOCKET_IO_SECONDS
            writing.data = writing.data[sent:]
        if not writing.data:
            self._written(writing, registered, writing.keepalive, complete=True)
        elif not registered:
            self._writing[sock.fileno()] = writing
            self.poller.register(sock, selectors.EVENT_WRITE, lambda _: self._write(writing, True))

    def _written(
        self, writing: _Writing, registered: bool, keepalive: bool, complete: bool
    ) -> None:
        """As gthread's `finish_request`: back to the poller for the next request, or closed
        (gracefully after a whole answer, at once when the client broke off or stalled)."""
        conn = writing.conn
        if registered:
            self._writing.pop(conn.sock.fileno(), None)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        if keepalive and self.alive:
            conn.set_timeout()
            self.keepalived_conns.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        else:
            self.nr_conns -= 1
            conn.close(graceful=complete)

    def expire_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Run `callback` in the main loop once `deadline` (time.monotonic()) has passed."""
        heapq.heappush(self._timers, (deadline, next(self._timer_order), callback))

    def _drop(self, pending: _Pending, answer: bool) -> None:
        self._forget(pending)
        if answer and pending.data:
            with contextlib.suppress(OSError):
                pending.conn.sock.send(_TIMEOUT_ANSWER)
        self.nr_conns -= 1
        pending.conn.close()

    def murder_pending(self) -> None:
        """Also close the connections whose request did not arrive in time (all, when
        stopping) and those whose client stopped taking its answer; run due timers."""
        super().murder_pending()
        now = time.monotonic()
        for pending in list(self._collecting.values()):
            if pending.deadline <= now or not self.alive:
                self._drop(pending, answer=True)
        for writing in list(self._writing.values()):
            if writing.deadline <= now:
                self._written(writing, registered=True, keepalive=False, complete=False)
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
