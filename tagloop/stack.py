"""The local stack behind `tagloop up` (contracts §6): every part under supervisor.

`tagloop up` checks the ports, writes a supervisord configuration under the
var directory, starts supervisord in its own session (so Ctrl+C reaches only
`up`, which then asks supervisord for an orderly shutdown), starts the parts
stage by stage and waits until each answers its readiness probe. Supervisor,
not this module, restarts a part that dies (`autorestart=true`), as Compose
and Kubernetes would.

Ports come from one base port (`--base-port`, default 8000) plus the fixed
offsets of the contract layout: UI +80, replicas +1, +2, ..., learner +10,
Pub/Sub emulator +85, S3 +333. Tests run the same code on another base and
another var directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import requests

from tagloop.errors import TagloopError
from tagloop.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tagloop.settings import env_str
from tagloop.supervision import FAILED_STATES, Supervisor, shutdown, spawn_supervisord

DEFAULT_BASE_PORT = 8000
DEFAULT_REPLICAS = 2
MAX_REPLICAS = 9  # replica ports base+1..base+9 stay below the learner's base+10
OFFSETS = {"ui": 80, "learning": 10, "pubsub": 85, "s3": 333}
MARKER = ".tagloop-stack"  # written by `up`: `reset` wipes only directories that carry it
# AF_UNIX paths are limited to 108 bytes including the terminator on Linux.
MAX_SOCKET_PATH = 100


class StackError(TagloopError):
    """The stack cannot start or be reset; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    """The stack's TCP ports, all on one host."""

    ui: int
    inference: tuple[int, ...]
    learning: int
    pubsub: int
    s3: int

    @classmethod
    def from_base(cls, base: int = DEFAULT_BASE_PORT, replicas: int = DEFAULT_REPLICAS) -> Ports:
        if not 1 <= replicas <= MAX_REPLICAS:
            raise StackError(f"replicas must be between 1 and {MAX_REPLICAS}, got {replicas}")
        if not 1 <= base <= 65535 - OFFSETS["s3"]:
            raise StackError(f"base port must be between 1 and {65535 - OFFSETS['s3']}, got {base}")
        return cls(
            ui=base + OFFSETS["ui"],
            inference=tuple(base + 1 + index for index in range(replicas)),
            learning=base + OFFSETS["learning"],
            pubsub=base + OFFSETS["pubsub"],
            s3=base + OFFSETS["s3"],
        )

    def named(self) -> dict[str, int]:
        """Program name -> port, in start order."""
        return {
            "pubsub": self.pubsub,
            "s3": self.s3,
            "learning": self.learning,
            **{replica_name(index): port for index, port in enumerate(self.inference)},
            "ui": self.ui,
        }


def replica_name(index: int) -> str:
    return f"inference-{index + 1}"


@dataclass(frozen=True)
class Program:
    """One supervised process: its command, its own environment and how to probe it."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    port: int
    stage: int  # parts of one stage start together once the previous stage is ready
    probe: str  # "grpc", "s3" or "http" (GET /readyz)


@dataclass(frozen=True)
class Stack:
    """Where the stack lives (var directory, working directory) and what runs in it."""

    var_dir: Path
    workdir: Path
    ports: Ports
    host: str = "127.0.0.1"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def conf_path(self) -> Path:
        return self.var_dir / "supervisor" / "supervisord.conf"

    @property
    def socket_path(self) -> Path:
        return self.var_dir / "supervisor" / "supervisor.sock"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ports.ui}"

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def topology_env(self) -> dict[str, str]:
        """What ties the parts together; it overrides the caller's environment."""
        return {
            "PUBSUB_EMULATOR_HOST": f"{self.host}:{self.ports.pubsub}",
            "TAGLOOP_S3_ENDPOINT_URL": self.url(self.ports.s3),
            # Local SeaweedFS keys: real cloud credentials never reach the local stack.
            "AWS_ACCESS_KEY_ID": DEFAULT_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": DEFAULT_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "TAGLOOP_CORS_ORIGIN": self.ui_url,
            "TAGLOOP_UI_UPSTREAMS": ",".join(self.url(port) for port in self.ports.inference),
        }

    def programs(self) -> list[Program]:
        """Every part in start order, each with the environment it needs."""
        shared = self.topology_env()
        var = self.var_dir

        def command(port: int, *args: str) -> tuple[str, ...]:
            return (
                sys.executable,
                "-m",
                "tagloop.cli",
                *args,
                "--host",
                self.host,
                "--port",
                str(port),
            )

        ports = self.ports
        programs = [
            Program(
                "pubsub",
                command(ports.pubsub, "pubsub-emulator", "--data-dir", str(var / "pubsub")),
                shared,
                ports.pubsub,
                stage=0,
                probe="grpc",
            ),
            Program(
                "s3",
                command(ports.s3, "s3-server", "--data-dir", str(var / "s3")),
                shared,
                ports.s3,
                stage=0,
                probe="s3",
            ),
            Program(
                "learning",
                command(ports.learning, "serve", "learning"),
                {**shared, "TAGLOOP_DATA_DIR": str(var / "learner")},
                ports.learning,
                stage=1,
                probe="http",
            ),
            # The UI needs no replica to be ready, so it starts beside the learner.
            Program(
                "ui", command(ports.ui, "serve", "ui"), shared, ports.ui, stage=1, probe="http"
            ),
        ]
        for index, port in enumerate(ports.inference):
            name = replica_name(index)
            programs.append(
                Program(
                    name,
                    command(port, "serve", "inference"),
                    {**shared, "TAGLOOP_MODEL_CACHE_DIR": str(var / name / "model-cache")},
                    port,
                    # After the learner: a replica that starts then finds a current model.
                    stage=2,
                    probe="http",
                )
            )
        return programs


# Supervisor expands %(name)s (once or twice, depending on the key) and its
# environment syntax has no escape for a double quote: such values are refused.
_UNSUPPORTED = ('"', "%", "\n")


def _checked(what: str, value: str) -> str:
    if any(char in value for char in _UNSUPPORTED):
        raise StackError(f"{what} contains a double quote, '%' or a newline: {value!r}")
    return value


def _environment(env: Mapping[str, str]) -> str:
    """Supervisor's KEY="value",... syntax."""
    return ",".join(f'{name}="{_checked(name, value)}"' for name, value in sorted(env.items()))


def supervisor_conf(stack: Stack) -> str:
    """The supervisord configuration for `stack` (programs start on request, not at boot)."""
    socket_path = str(stack.socket_path)
    if len(socket_path.encode()) > MAX_SOCKET_PATH:
        raise StackError(f"var directory path too long for a unix socket: {socket_path}")
    logs = stack.log_dir
    sections: dict[str, dict[str, str]] = {
        "unix_http_server": {"file": socket_path, "chmod": "0700"},
        "supervisord": {
            "nodaemon": "true",
            "logfile": str(logs / "supervisord.log"),
            "logfile_maxbytes": "10MB",
            "logfile_backups": "3",
            "pidfile": str(stack.var_dir / "supervisor" / "supervisord.pid"),
            "childlogdir": str(logs),
            "directory": str(stack.workdir),
            "silent": "true",
        },
        "rpcinterface:supervisor": {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
        },
        "supervisorctl": {"serverurl": f"unix://{socket_path}"},
    }
    for program in stack.programs():
        sections[f"program:{program.name}"] = {
            "command": shlex.join(program.command),
            "directory": str(stack.workdir),
            "environment": _environment(program.env),
            "priority": str(100 + 10 * program.stage),
            "autostart": "false",  # `up` starts the stages in order
            "autorestart": "true",
            "startsecs": "1",
            "startretries": "10",
            "stopsignal": "TERM",
            "stopwaitsecs": "20",
            # gunicorn workers and SeaweedFS die with their parent
            "stopasgroup": "true",
            "killasgroup": "true",
            "redirect_stderr": "true",
            "stdout_logfile": str(logs / f"{program.name}.log"),
            "stdout_logfile_maxbytes": "10MB",
            "stdout_logfile_backups": "3",
        }
    lines = ["; Generated by `tagloop up`: edits are overwritten on the next start."]
    for section, values in sections.items():
        lines += ["", f"[{section}]"]
        # `environment` holds its quotes already; its values were checked one by one.
        lines += [
            f"{key}={value if key == 'environment' else _checked(key, value)}"
            for key, value in values.items()
        ]
    return "\n".join(lines) + "\n"


def taken_ports(ports: Mapping[str, int], host: str = "127.0.0.1") -> dict[str, int]:
    """The ports someone already listens on (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    taken = {}
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken[name] = port
    return taken


def prepare(stack: Stack) -> None:
    """Create the var layout and write the supervisord configuration."""
    for directory in (stack.var_dir, stack.log_dir, stack.conf_path.parent):
        directory.mkdir(parents=True, exist_ok=True)
    (stack.var_dir / MARKER).write_text("state of `tagloop up`; `tagloop reset` wipes it\n")
    stack.conf_path.write_text(supervisor_conf(stack))


def reset(var_dir: Path) -> bool:
    """Wipe the stack's state; False if there was none. Refuses while the stack runs."""
    if not var_dir.exists():
        return False
    if not (var_dir / MARKER).exists() and var_dir.resolve() != (Path.cwd() / "var").resolve():
        raise StackError(f"{var_dir} was not created by `tagloop up`; not deleting it")
    supervisor = Supervisor(var_dir / "supervisor" / "supervisor.sock")
    if supervisor.running():
        raise StackError(f"the stack in {var_dir} is running: stop it (Ctrl+C) first")
    shutil.rmtree(var_dir)
    return True


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of a part's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class _Stop(Exception):
    """Raised from the SIGINT/SIGTERM handler to leave whatever `up` is waiting on."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


class Probes:
    """Readiness checks: gRPC for the emulator, the bucket for S3, GET /readyz for services."""

    def __init__(self, stack: Stack, bucket: str) -> None:
        from tagloop.registry import make_s3_client

        self.stack = stack
        self.bucket = bucket
        self._s3 = make_s3_client(
            stack.url(stack.ports.s3),
            access_key=DEFAULT_ACCESS_KEY,
            secret_key=DEFAULT_SECRET_KEY,
            connect_timeout=0.5,
            read_timeout=2.0,
            max_attempts=1,
        )

    def ready(self, program: Program) -> bool:
        try:
            if program.probe == "grpc":
                return self._grpc(f"{self.stack.host}:{program.port}")
            if program.probe == "s3":
                self._s3.head_bucket(Bucket=self.bucket)
                return True
            url = f"{self.stack.url(program.port)}/readyz"
            return requests.get(url, timeout=2.0).status_code == 200
        except Exception:  # any failure means "not ready yet"
            return False

    @staticmethod
    def _grpc(target: str) -> bool:
        import grpc

        with grpc.insecure_channel(target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
            except grpc.FutureTimeoutError:
                return False
        return True


def _wait_stage(
    stack: Stack,
    supervisor: Supervisor,
    supervisord: subprocess.Popen[bytes],
    probes: Probes,
    stage: list[Program],
    deadline: float,
    started: float,
    out: TextIO,
) -> None:
    """Start one stage's programs and poll until all are ready; StackError with the log if not."""
    for program in stage:
        supervisor.start(program.name)
    waiting = list(stage)
    while waiting:
        if supervisord.poll() is not None:
            raise StackError(
                f"supervisord exited with status {supervisord.returncode}:\n"
                + log_tail(stack.log_dir / "supervisord.log")
            )
        for program in list(waiting):
            if probes.ready(program):
                waiting.remove(program)
                print(
                    f"  {program.name:<12} ready on port {program.port}"
                    f" ({time.monotonic() - started:.1f} s)",
                    file=out,
                    flush=True,
                )
            elif supervisor.info(program.name)["statename"] in FAILED_STATES:
                raise StackError(_failure(stack, program, "gave up restarting it"))
        if waiting and time.monotonic() > deadline:
            raise StackError(_failure(stack, waiting[0], "not ready in time"))
        if waiting:
            time.sleep(0.1)


def _failure(stack: Stack, program: Program, what: str) -> str:
    log = stack.log_dir / f"{program.name}.log"
    return f"{program.name}: {what}; the end of {log}:\n{log_tail(log)}"


def up(stack: Stack, timeout: float = 300.0, out: TextIO = sys.stdout) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM; 0 after a clean stop."""
    supervisor = Supervisor(stack.socket_path)
    if supervisor.running():
        print(f"up: a stack is already running from {stack.var_dir}", file=sys.stderr)
        return 1
    taken = taken_ports(stack.ports.named(), stack.host)
    if taken:
        for name, port in taken.items():
            print(f"up: port {port} ({name}) is already in use", file=sys.stderr)
        return 1
    prepare(stack)
    started = time.monotonic()
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    supervisord = spawn_supervisord(stack.conf_path, stack.log_dir / "supervisord.out")
    status = 0
    try:
        deadline = started + timeout
        _wait_for(supervisor.running, deadline, "supervisord did not open its socket")
        probes = Probes(stack, env_str(os.environ, "TAGLOOP_S3_BUCKET", "tagloop-models"))
        programs = stack.programs()
        for stage in sorted({program.stage for program in programs}):
            members = [program for program in programs if program.stage == stage]
            _wait_stage(stack, supervisor, supervisord, probes, members, deadline, started, out)
        print(
            f"tagloop is ready at {stack.ui_url} ({time.monotonic() - started:.1f} s; "
            f"logs in {stack.log_dir}). Ctrl+C stops it.",
            file=out,
            flush=True,
        )
        supervisord.wait()
        print(f"up: supervisord exited with status {supervisord.returncode}", file=sys.stderr)
        status = 1
    except _Stop as stop:
        print(f"up: {stop} received, stopping every part ...", file=out, flush=True)
    except StackError as error:
        print(f"up: {error}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl+C must not interrupt the orderly shutdown.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        shutdown(supervisord)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("up: stopped", file=out, flush=True)
    return status


def _wait_for(probe: Callable[[], bool], deadline: float, what: str) -> None:
    while not probe():
        if time.monotonic() > deadline:
            raise StackError(what)
        time.sleep(0.05)


def add_arguments(parser: argparse.ArgumentParser, *, up: bool) -> argparse.ArgumentParser:
    """Options of `tagloop up` (up=True) and `tagloop reset`."""
    parser.add_argument(
        "--var-dir", type=Path, default=Path("var"), help="state directory (default ./var)"
    )
    if up:
        parser.add_argument(
            "--base-port",
            type=int,
            default=DEFAULT_BASE_PORT,
            help="ports are base + 80 (UI), +1.. (replicas), +10 (learner), +85 (Pub/Sub),"
            " +333 (S3); default 8000, the contract ports",
        )
        parser.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS)
        parser.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to wait for readiness"
        )
    return parser


def run_up(args: argparse.Namespace) -> int:
    stack = Stack(
        var_dir=args.var_dir.resolve(),
        workdir=Path.cwd(),
        ports=Ports.from_base(args.base_port, args.replicas),
    )
    return up(stack, timeout=args.timeout)


def run_reset(args: argparse.Namespace) -> int:
    wiped = reset(args.var_dir)
    print(f"reset: {'wiped' if wiped else 'nothing to wipe in'} {args.var_dir}")
    return 0
