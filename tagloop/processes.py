"""Stopping a child server process the same way everywhere."""

from __future__ import annotations

import signal
import subprocess


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
