"""Slow-header and idle connections, as an attacker opens them (tests and benchmarks).

`hostile_clients(base_url, slow=20, idle=100)` holds, for the duration of the
block, `idle` connections that send nothing and `slow` ones that send a request
head one header line every `drip_seconds` and never finish it. Bounded: the
drip stops after `max_lines` lines or when the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit


def _connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=5)


@contextlib.contextmanager
def hostile_clients(
    base_url: str,
    slow: int = 20,
    idle: int = 100,
    drip_seconds: float = 0.25,
    max_lines: int = 400,
) -> Iterator[None]:
    """Slow-header and idle connections to `base_url`, open while the block runs."""
    idlers = [_connect(base_url) for _ in range(idle)]
    slowpokes = [_connect(base_url) for _ in range(slow)]
    stop = threading.Event()

    def drip() -> None:
        for conn in slowpokes:
            with contextlib.suppress(OSError):
                conn.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        line = 0
        while not stop.wait(drip_seconds) and line < max_lines:
            line += 1
            for conn in slowpokes:
                with contextlib.suppress(OSError):  # the server gave up on this one: fine
                    conn.sendall(f"X-Slow-{line}: 1\r\n".encode())

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        yield
    finally:
        stop.set()
        dripper.join(5)
        for conn in idlers + slowpokes:
            conn.close()
