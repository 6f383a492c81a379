"""A minimal keep-alive HTTP/1.1 client for the UI's `/api/*` proxy (issue 19).

The proxy sends small requests to replicas it trusts and gets small,
length-delimited JSON answers back. urllib3 and http.client cost more CPU per
request than a replica's whole answer (header objects, `email.feedparser` for
the answer's headers, retry and redirect machinery), so this client writes the
request with one `sendall` and parses the status line, headers and body by hand.

Errors are told apart the way the proxy needs them: `ConnectFailed` (the request
never left, try another upstream), `socket.timeout` while waiting for the answer
(the upstream is slow), anything else (`ResponseBroken`, `OSError`) after the
request was sent (the connection broke; repeat only what is safe to repeat).
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
"""An answer whose status line and headers do not fit is refused as broken."""
MAX_BODY_BYTES = 16 * 1024 * 1024
RECV_BYTES = 65536
BODILESS_STATUSES = frozenset({204, 304})


class ConnectFailed(OSError):
    """No connection could be established: the request was never sent."""


class ResponseBroken(OSError):
    """The upstream's answer was cut short or is not HTTP/1.x."""


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    reusable: bool


class AnswerParser:
    """One answer's bytes in, a `RawAnswer` out: the parsing rules of this client, without I/O.

    Fed whatever arrives (`feed`), and told when the connection closed (`end`),
    it returns the answer once complete, so the blocking `Connection.exchange`
    and the UI's main-loop exchange (frontend/loop_proxy.py) parse alike. Bytes
    past the answer stay in `buffer`.
    """

    def __init__(self, head_only: bool, buffer: bytes = b"") -> None:
        self.buffer = buffer
        self.closed = False
        self._steps = self._parse(head_only)
        self.answer: RawAnswer | None = None

    def feed(self, data: bytes) -> RawAnswer | None:
        """Take `data`; the answer once it is complete, else None (`ResponseBroken` if it is bad)."""
        self.buffer += data
        return self._advance()

    def end(self) -> RawAnswer:
        """The connection closed: the answer if it ends there, else `ResponseBroken`."""
        self.closed = True
        answer = self._advance()
        if answer is None:  # for the type checker: once closed, every step returns or raises
            raise ResponseBroken("connection closed before the answer was complete")
        return answer

    def _advance(self) -> RawAnswer | None:
        if self.answer is None:
            try:
                next(self._steps)
            except StopIteration as done:
                self.answer = done.value
        return self.answer

    def _more(self) -> Iterator[None]:
        """Wait for the next bytes (one `yield`), or fail if none can come."""
        if self.closed:
            raise ResponseBroken("connection closed before the answer was complete")
        yield

    def _until(self, marker: bytes, limit: int) -> Generator[None, None, bytes]:
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise ResponseBroken("answer head too large")
            yield from self._more()
        line, self.buffer = self.buffer[:end], self.buffer[end + len(marker) :]
        return line

    def _exactly(self, size: int) -> Generator[None, None, bytes]:
        while len(self.buffer) < size:
            yield from self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _to_end(self) -> Generator[None, None, bytes]:
        while not self.closed:
            if len(self.buffer) > MAX_BODY_BYTES:
                raise ResponseBroken("answer body too large")
            yield
        data, self.buffer = self.buffer, b""
        return data

    def _chunked(self) -> Generator[None, None, bytes]:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = yield from self._until(b"\r\n", MAX_HEAD_BYTES)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ResponseBroken("bad chunk size") from None
            if size == 0:
                while (yield from self._until(b"\r\n", MAX_HEAD_BYTES)):  # trailers, blank line
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ResponseBroken("answer body too large")
            parts.append((yield from self._exactly(size)))
            yield from self._exactly(2)

    def _parse(self, head_only: bool) -> Generator[None, None, RawAnswer]:
        head = yield from self._until(b"\r\n\r\n", MAX_HEAD_BYTES)
        status_line, _, header_block = head.partition(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ResponseBroken(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        try:
            status = int(rest[:3])
        except ValueError:
            raise ResponseBroken(f"bad status line: {status_line[:40]!r}") from None
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        reusable = version == b"HTTP/1.1"
        for raw in header_block.split(b"\r\n") if header_block else ():
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise ResponseBroken("malformed header line")
            name, value = name.strip(), value.strip()
            lowered = name.lower()
            if lowered == "content-length":
                if not value.isdigit() or int(value) > MAX_BODY_BYTES:
                    raise ResponseBroken("bad Content-Length")
                length = int(value)
            elif lowered == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif lowered == "connection":
                reusable = reusable and "close" not in value.lower()
            headers.append((name, value))
        if head_only or status in BODILESS_STATUSES or 100 <= status < 200:
            body = b""
        elif chunked:
            body = yield from self._chunked()
        elif length is not None:
            body = yield from self._exactly(length)
        else:
            body, reusable = (yield from self._to_end()), False
        return RawAnswer(status, headers, body, reusable)


class Connection:
    """One socket to an upstream, with the bytes read past the last answer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def dropped(self) -> bool:
        """An idle kept-alive socket that is readable was closed (or spoke out of turn)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable) or bool(self.buffer)

    def close(self) -> None:
        self.sock.close()

    def exchange(self, request: bytes, head_only: bool) -> RawAnswer:
        """Send one request and read its whole answer."""
        self.sock.sendall(request)
        parser = AnswerParser(head_only, self.buffer)
        answer = parser.feed(b"")
        while answer is None:
            chunk = self.sock.recv(RECV_BYTES)
            answer = parser.feed(chunk) if chunk else parser.end()
        self.buffer = parser.buffer
        return answer


class Upstream:
    """Kept-alive connections to one base URL, at most `pool_size` of them idle."""

    def __init__(
        self, base_url: str, connect_timeout: float, read_timeout: float, pool_size: int
    ) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        netloc = parts.netloc.rpartition("@")[2]
        self.host_header = netloc.encode("idna" if not netloc.isascii() else "ascii")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._tls_context = ssl.create_default_context() if self.tls else None

    def _connect(self) -> Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except OSError as error:
            raise ConnectFailed(f"{self.host}:{self.port}: {error}") from error
        sock.settimeout(self.read_timeout)
        return Connection(sock)

    def take_idle(self) -> Connection | None:
        """A kept-alive connection that is still open, else None."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None or not connection.dropped():
                return connection
            connection.close()

    def give_back(self, connection: Connection) -> None:
        """Keep a connection whose last answer was complete (at most `pool_size` idle)."""
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(connection)
                return
        connection.close()

    def encoded(self, method: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
        """A request's bytes as this client sends them."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1".encode("latin-1")]
        lines.append(b"Host: " + self.host_header)
        lines.extend(f"{name}: {value}".encode("latin-1") for name, value in headers)
        if body or method in {"POST", "PUT", "PATCH"}:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def request(
        self, method: str, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> RawAnswer:
        """One exchange on a kept-alive connection; a connection that failed is closed."""
        request = self.encoded(method, path, body, headers)
        connection = self.take_idle() or self._connect()
        try:
            answer = connection.exchange(request, head_only=method == "HEAD")
        except BaseException:
            connection.close()
            raise
        if answer.reusable:
            self.give_back(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
