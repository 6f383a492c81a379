"""Start and stop a Pub/Sub emulator as a child process (tests, benchmarks, local tooling).

Two emulators share one interface: the project's own (`EmulatorProcess`,
python only, the default) and Google's official one from the gcloud SDK
(`OfficialEmulatorProcess`), the reference the project's emulator is held to.
Each runs in its own process, as in the local stack, so the client under test
shares nothing with it but the gRPC connection.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import grpc

from tagloop_dev.processes import (
    ChildExited,
    ChildLauncher,
    ChildNotReady,
    ChildProcess,
    free_port,
)


class EmulatorProcess(ChildLauncher):
    """`python -m tagloop_dev.emulator` as a child process, restartable on the same port."""

    name = "pubsub emulator"

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        options: Sequence[str] = (),
        short_durations: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.options = tuple(options)  # more command-line options, e.g. ("--deny-admin",)
        self.short_durations = short_durations  # --short-durations (the project's emulator only)
        self._log = tempfile.NamedTemporaryFile(prefix="pubsub-emulator-", suffix=".log")  # noqa: SIM115
        self.child = ChildProcess(self.name, [], log_path=Path(self._log.name))

    @property
    def host(self) -> str:
        """The value for PUBSUB_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that runs this emulator on `self.port`."""
        command = [sys.executable, "-m", "tagloop_dev.emulator", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        if self.short_durations:
            command.append("--short-durations")
        return command + list(self.options)

    def start(self, timeout: float = 30.0) -> Self:
        """Start it and wait until it accepts gRPC connections."""
        self.child.command = self.command()
        self.child.env = {**os.environ, "TAGLOOP_LOG_FORMAT": "text"}
        self.child.start()
        try:
            self.child.wait_ready(self._accepts_connections, timeout, interval=0)
        except ChildExited:
            self.child.process = None
            raise
        except ChildNotReady:
            self.stop(signal.SIGKILL)
            raise
        return self

    def _accepts_connections(self) -> bool:
        with grpc.insecure_channel(self.host) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
            except grpc.FutureTimeoutError:
                return False
            return True

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the emulator and wait for it to exit; returns the exit status."""
        return self.child.stop(timeout, signum)

    def release(self) -> None:
        """The log file, kept across restarts on the same port, goes with the launcher."""
        self._log.close()


class OfficialEmulatorProcess(EmulatorProcess):
    """Google's Pub/Sub emulator (gcloud SDK, Java) as a child process.

    It runs the SDK's `cloud-pubsub-emulator` script directly rather than
    `gcloud beta emulators pubsub start`, so the child is the JVM itself and
    stopping it by PID leaves nothing behind.
    """

    name = "official pubsub emulator"

    def command(self) -> list[str]:
        command = [str(official_emulator_script()), "--host=127.0.0.1", f"--port={self.port}"]
        if self.data_dir is not None:
            command.append(f"--dir={self.data_dir}")
        return command


class OfficialEmulatorMissing(RuntimeError):
    """The gcloud SDK's Pub/Sub emulator component is not installed here."""


def official_emulator_script() -> Path:
    """The SDK's emulator start script: `$CLOUDSDK_ROOT_DIR` or the SDK `gcloud` belongs to.

    Raises OfficialEmulatorMissing with what to install when there is none.
    """
    root = os.environ.get("CLOUDSDK_ROOT_DIR")
    if not root:
        gcloud = shutil.which("gcloud")
        root = str(Path(gcloud).resolve().parents[1]) if gcloud else ""
    script = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not root or not script.is_file():
        raise OfficialEmulatorMissing(
            "the official Pub/Sub emulator needs the Google Cloud SDK with its "
            "pubsub-emulator component (gcloud components install pubsub-emulator, "
            "or Debian's google-cloud-cli-pubsub-emulator) and Java 17+; "
            f"looked for {script}"
        )
    return script
