"""Child server processes, started, awaited and stopped the same way everywhere.

Every launcher of a child server (the Pub/Sub emulators, SeaweedFS, the
learner, the test fixtures' replicas, UI servers and `tagloop up`) is a
`ChildProcess`: its output goes to a log file (or this process's own
streams), readiness is a probe polled against a deadline that also notices
the child dying early, and stopping signals that one PID (or its process
group) and reaps it, killing it past a timeout so nothing is left behind.

`Launcher` gives every launcher the same `with` block: start on entry, stop
(and release what outlives a restart) on exit, whatever ended the block.

`Stop` and `stop_on_signals` serve the foreground commands (`tagloop up`,
`tagloop s3-server`) that leave their wait on SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

POLL_SECONDS = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (for tests and launchers)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(
    process: subprocess.Popen[bytes],
    timeout: float,
    signum: int = signal.SIGTERM,
    group: bool = False,
) -> int:
    """Send `signum` if the child still runs and wait up to `timeout` seconds.

    Past the deadline the child (its whole process group when `group`, for a
    child that leads its own session, such as gunicorn with its workers) is
    killed and reaped before TimeoutExpired is raised, so a caller never
    leaves an orphan or a zombie behind.
    """
    if process.poll() is None:
        process.send_signal(signum)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
        raise


class ChildExited(RuntimeError):
    """The child exited while it was awaited."""


class ChildNotReady(TimeoutError):
    """The child's readiness probe did not pass before the deadline."""


class Launcher(ABC):
    """`with launcher:` starts it and, however the block ends, stops it and releases it.

    One pair of `__enter__`/`__exit__` for every launcher (ChildProcess, the
    Pub/Sub emulators, S3Server, LearnerProcess, the test stack): each says
    only how it starts and stops.
    """

    @abstractmethod
    def start(self) -> Self:
        """Start the child (and wait until it is ready, where the launcher knows how)."""

    @abstractmethod
    def stop(self) -> int | None:
        """Stop the child and reap it; its exit status (None: it was not running)."""

    def release(self) -> None:
        """Free what the launcher keeps across restarts (a log file); after the last stop."""
        return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.release()


class ChildProcess(Launcher):
    """One child server: its command line, where its output goes, its process once started.

    `log_path=None` lets the child write to this process's stdout/stderr (a
    foreground command); otherwise the log file is appended to, so a restart
    keeps the earlier run's lines. `new_session` puts the child in a process
    group of its own, which `stop` kills as a whole past its timeout.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.new_session = new_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> Self:
        """Start the child; its log file is open only in the child."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")
        if self.log_path is None:
            self.process = self._popen(None)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                self.process = self._popen(log.fileno())
        return self

    def _popen(self, log: int | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            env=self.env,
            cwd=self.cwd,
            start_new_session=self.new_session,
        )

    def output(self) -> str:
        """Everything the child logged so far ("" without a log file): for failure messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise ChildExited (with the log's end) if the child is not running."""
        if self.process is None:
            raise ChildExited(f"{self.name} is not running")
        code = self.process.poll()
        if code is not None:
            raise ChildExited(f"{self.name} exited with status {code}:\n{self.output()[-4000:]}")

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout: float,
        interval: float = POLL_SECONDS,
    ) -> None:
        """Poll `ready` until it passes; ChildExited as soon as the child dies,
        ChildNotReady (naming the probe's last error) past `timeout` seconds.

        Exceptions from the probe count as "not yet"; a BaseException (a stop
        signal, Ctrl+C) passes through.
        """
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.check_alive()
            try:
                if ready():
                    return
            except Exception as error:  # anything means "not ready yet"
                last_error = error
            if time.monotonic() > deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise ChildNotReady(
                    f"{self.name} not ready after {timeout}s{detail}\n{self.output()[-4000:]}"
                ) from last_error
            time.sleep(interval)

    def stop(self, timeout: float = 15.0, signum: int = signal.SIGTERM) -> int:
        """Signal the child and reap it (killed past `timeout`); returns its exit status.

        Stopping a child that was never started, or already stopped, returns 0.
        """
        process, self.process = self.process, None
        if process is None:
            return 0
        return stop_process(process, timeout, signum, group=self.new_session)

    def kill(self) -> None:
        """SIGKILL without waiting for a clean exit (a crash), then reap."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()


class Stop(BaseException):
    """Raised from a SIGINT/SIGTERM handler to leave a foreground wait.

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way (a readiness poll, a client library) can swallow the stop.
    """


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


@contextmanager
def stop_on_signals(
    signums: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Within the block, `signums` raise Stop; the previous handlers come back after it."""
    previous = {signum: signal.signal(signum, _raise_stop) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ChildLauncher(Launcher):
    """A launcher around one ChildProcess (`child`, set by the subclass's __init__):
    the emulators, S3Server, LearnerProcess and the test stack say how they start and
    stop; what is running and what it logged are the child's."""

    child: ChildProcess

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running child (None while stopped)."""
        return self.child.process

    def output(self) -> str:
        """What the child logged so far, when it logs to a file (for failure messages)."""
        return self.child.output()
