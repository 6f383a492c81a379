"""The local stack behind `tagloop up` (contracts §6): every part under supervisor.

`tagloop up` checks the ports, writes a supervisord configuration under the
var directory, starts supervisord in its own session (so Ctrl+C reaches only
`up`, which then asks supervisord for an orderly shutdown), starts the parts
in two stages (the emulator and S3; then the UI and the replicas) and waits
until each answers its readiness probe. The learner starts with the first
stage (`Program.early`): its first model is the longest way to "ready", and
it retries the emulator and S3 until they answer, as it does in a cluster,
where nothing orders the start. The UI and the replicas start once it is
alive (GET /healthz: imports done, corpus read, fit worker started), so that
their imports do not take the two cores of a small machine from the
learner's start; they are up before its first fit ends. Supervisor,
not this code, restarts a part that dies (`autorestart=true`), as Compose
and Kubernetes would. This module is the plan, light to import (`tagloop
--help`); `tagloop_dev.stack.run` runs it.

Ports come from one base port (`--base-port`, default 8000) plus the fixed
offsets of the contract layout: UI +80, replicas +1, +2, ..., learner +10,
Pub/Sub emulator +85, S3 +333. Tests run the same code on another base and
another var directory.

The learner's model-signing key is made on the first `up` in
`<var>/keys/model-signing.key` (mode 0600) with its public half beside it;
only the learner is given the private key's path, the replicas the public one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tagloop.errors import TagloopError
from tagloop_dev.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

DEFAULT_BASE_PORT = 8000
DEFAULT_REPLICAS = 2
MAX_REPLICAS = 9  # replica ports base+1..base+9 stay below the learner's base+10
OFFSETS = {"ui": 80, "learning": 10, "pubsub": 85, "s3": 333}
# Supervisor groups, in start order: the emulator and S3 (and the learner: `Program.early`);
# then the UI and the replicas together (a replica waits for the learner's first model on its
# own: it hears the broadcast, or finds current.json on its next look; `up` creates the topics
# in between). supervisord stops them in reverse order.
STAGES = ("infra", "services")
MARKER = ".tagloop-stack"  # written by `up`: `reset` wipes only directories that carry it
# `--pubsub`: the project's emulator (default) or Google's, from the gcloud SDK.
PUBSUB_EMULATORS = ("project", "official")
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


def local_secret(path: Path) -> str:
    """A random key made once per local stack (kept in its var dir, wiped by `tagloop reset`),
    so that browsers keep their annotator ids across restarts of the UI."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


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
    early: bool = False
    """Start with the first stage, not with its own (which still sets the stop order and
    waits for it to be ready): for a part that retries what it needs until it answers. Later
    stages start once it is alive (it answers GET /healthz)."""

    @property
    def start_stage(self) -> int:
        return 0 if self.early else self.stage

    @property
    def supervisor_name(self) -> str:
        """`group:name`: one supervisor group per stage, so a stage stops in parallel."""
        return f"{STAGES[self.stage]}:{self.name}"


def supervisor_socket(var_dir: Path) -> Path:
    """supervisord's XML-RPC socket for the stack in `var_dir`."""
    return var_dir / "supervisor" / "supervisor.sock"


@dataclass(frozen=True)
class Stack:
    """Where the stack lives (var directory, working directory) and what runs in it."""

    var_dir: Path
    workdir: Path
    ports: Ports
    host: str = "127.0.0.1"
    pubsub: str = "project"  # which emulator: PUBSUB_EMULATORS
    rollout: bool = False
    """Staged rollout in the learner (`--rollout`). Off by default here, unlike the Helm
    chart: a developer's correction-driven candidate is served at once, not after shadow
    and canary have gathered evidence (docs/learning.md "Rollout")."""

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def signing_key(self) -> Path:
        """The learner's private model-signing key (made by `prepare` if missing)."""
        return self.var_dir / "keys" / "model-signing.key"

    @property
    def conf_path(self) -> Path:
        return self.var_dir / "supervisor" / "supervisord.conf"

    @property
    def socket_path(self) -> Path:
        return supervisor_socket(self.var_dir)

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
            "TAGLOOP_UI_LEARNER_URL": self.url(self.ports.learning),
            # The stack's own model-signing key pair, never keys from the caller's environment.
            "TAGLOOP_MODEL_SIGNING_KEY_FILE": "",
            "TAGLOOP_MODEL_PUBLIC_KEYS": "",
            "TAGLOOP_MODEL_PUBLIC_KEYS_FILE": "",
        }

    def programs(self) -> list[Program]:
        """Every part in start order, each with the environment it needs."""
        from tagloop.domain.signing import public_key_path  # cryptography: not for --help

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
                self.emulator_command(command),
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
                {
                    **shared,
                    "TAGLOOP_DATA_DIR": str(var / "learner"),
                    "TAGLOOP_MODEL_SIGNING_KEY_FILE": str(self.signing_key),
                    "TAGLOOP_ROLLOUT_ENABLED": str(self.rollout).lower(),
                },
                ports.learning,
                stage=1,
                probe="http",
                # Its imports, corpus and fit worker overlap the emulator's and S3's start.
                early=True,
            ),
            Program(
                "ui",
                command(ports.ui, "serve", "ui"),
                {**shared, "TAGLOOP_UI_ANNOTATOR_SECRET": local_secret(var / "ui-annotator.key")},
                ports.ui,
                stage=1,
                probe="http",
            ),
        ]
        for index, port in enumerate(ports.inference):
            name = replica_name(index)
            programs.append(
                Program(
                    name,
                    command(port, "serve", "inference"),
                    {
                        **shared,
                        "TAGLOOP_MODEL_CACHE_DIR": str(var / name / "model-cache"),
                        "TAGLOOP_MODEL_PUBLIC_KEYS_FILE": str(public_key_path(self.signing_key)),
                    },
                    port,
                    # Beside the learner: importing and forking gunicorn overlaps the
                    # first fit; the replica is ready once it has loaded that model.
                    stage=1,
                    probe="http",
                )
            )
        return programs

    def emulator_command(self, command: Callable[..., tuple[str, ...]]) -> tuple[str, ...]:
        """The project's emulator, or Google's (its own data directory: another format)."""
        if self.pubsub == "official":
            from tagloop_dev.emulator.launcher import (  # grpc: not for `tagloop --help`
                OfficialEmulatorMissing,
                official_emulator_script,
            )

            try:
                script = official_emulator_script()
            except OfficialEmulatorMissing as error:
                raise StackError(f"--pubsub official: {error}") from None
            directory = self.var_dir / "pubsub-official"
            return (
                str(script),
                f"--host={self.host}",
                f"--port={self.ports.pubsub}",
                f"--dir={directory}",
            )
        return command(
            self.ports.pubsub, "pubsub-emulator", "--data-dir", str(self.var_dir / "pubsub")
        )


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
    programs = stack.programs()
    for stage, group in enumerate(STAGES):
        # Supervisor stops the groups in reverse priority order, each group's programs at once.
        members = [program.name for program in programs if program.stage == stage]
        sections[f"group:{group}"] = {"programs": ",".join(members), "priority": str(100 + stage)}
    for program in programs:
        sections[f"program:{program.name}"] = {
            "command": shlex.join(program.command),
            "directory": str(stack.workdir),
            "environment": _environment(program.env),
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
    if not stack.signing_key.exists():
        from tagloop.domain.signing import generate_key_files

        generate_key_files(stack.signing_key)
    stack.conf_path.write_text(supervisor_conf(stack))


def reset(var_dir: Path) -> bool:
    """Wipe the stack's state; False if there was none. Refuses while the stack runs."""
    from tagloop_dev.stack.supervision import Supervisor

    if not var_dir.exists():
        return False
    if not (var_dir / MARKER).exists() and var_dir.resolve() != (Path.cwd() / "var").resolve():
        raise StackError(f"{var_dir} was not created by `tagloop up`; not deleting it")
    if Supervisor(supervisor_socket(var_dir)).running():
        raise StackError(f"the stack in {var_dir} is running: stop it (Ctrl+C) first")
    shutil.rmtree(var_dir)
    return True


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
            "--pubsub",
            choices=PUBSUB_EMULATORS,
            default="project",
            help="Pub/Sub emulator: the project's own (default) or Google's official one"
            " (needs the gcloud SDK's pubsub-emulator component and Java)",
        )
        parser.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to wait for readiness"
        )
        parser.add_argument(
            "--rollout",
            action="store_true",
            help="staged rollout: candidates run in shadow, then canary, before full (off by"
            " default locally for fast feedback; on in the Helm chart)",
        )
    return parser


def run_up(args: argparse.Namespace) -> int:
    from tagloop_dev.stack.run import up

    stack = Stack(
        var_dir=args.var_dir.resolve(),
        workdir=Path.cwd(),
        ports=Ports.from_base(args.base_port, args.replicas),
        pubsub=args.pubsub,
        rollout=args.rollout,
    )
    return up(stack, timeout=args.timeout)


def run_reset(args: argparse.Namespace) -> int:
    wiped = reset(args.var_dir)
    print(f"reset: {'wiped' if wiped else 'nothing to wipe in'} {args.var_dir}")
    return 0
