"""supervisord as a child of `tagloop up`, and its XML-RPC interface.

supervisord runs in a session of its own so that Ctrl+C in the terminal
reaches only `up`, which then stops supervisord with SIGTERM: supervisor
stops the programs in reverse order and no program sees the signal twice or
gets restarted half-way through the shutdown. It also gets SIGTERM if `up`
itself dies (PR_SET_PDEATHSIG), so an aborted test never leaves a stack
behind.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

_PR_SET_PDEATHSIG = 1
# supervisor's process state once it has given up restarting a program.
FAILED_STATES = frozenset({"FATAL"})


class Supervisor:
    """A client of one supervisord's unix socket (stateless: every call reconnects)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def _proxy(self) -> Any:
        transport = SupervisorTransport(serverurl=f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def running(self) -> bool:
        """True if a supervisord answers on the socket and is running."""
        if not self.socket_path.exists():
            return False
        try:
            state: dict[str, Any] = self._proxy().supervisor.getState()
            return bool(state["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    def start(self, name: str) -> None:
        """Ask for `name` to start, without waiting for it (its readiness is probed instead)."""
        self._proxy().supervisor.startProcess(name, False)

    def info(self, name: str) -> dict[str, Any]:
        """supervisor's process info: statename, pid, start, exitstatus, ..."""
        info: dict[str, Any] = self._proxy().supervisor.getProcessInfo(name)
        return info

    def pid(self, name: str) -> int:
        """The current pid of a running program (0 if it is not running)."""
        return int(self.info(name)["pid"])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent goes away (Linux only)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_supervisord(conf_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start supervisord in the foreground mode of its config, in a new session."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - `up` starts no threads before this
        )
    finally:
        log.close()


def shutdown(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM supervisord and wait until it has stopped every program; SIGKILL as a last resort."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
