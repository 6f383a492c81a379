"""Stopping a child server process the same way everywhere."""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (for tests and launchers)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float, signum: int = signal.SIGTERM) -> int:
    """Send `signum` if the child still runs and wait up to `timeout` seconds.

    Past the deadline the child is killed and reaped before TimeoutExpired is
    raised, so a caller never leaves an orphan or a zombie behind.
    """
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
