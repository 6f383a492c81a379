"""The SeaweedFS launcher and `tagloop s3-server`: start, bucket, restart, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop.channels.registry import Registry, new_version
from tagloop_dev.s3server import S3Server, S3ServerError, free_ports, weed_binary
from tests.fixtures.wait import wait_until


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_weed_binary_comes_from_the_environment() -> None:
    weed = weed_binary()
    assert weed.name == "weed"
    assert os.access(weed, os.X_OK)


def test_launcher_and_cli_serve_the_bucket_and_keep_data_across_restarts(
    tmp_path: Path,
) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.npz").write_bytes(b"model bytes")
    version = new_version()

    server = S3Server(data, port=0, bucket="launcher-bucket", log_path=tmp_path / "weed.log")
    with server:
        registry = server.registry()
        registry.client.head_bucket(Bucket="launcher-bucket")
        registry.put_version(version, bundle, {"decision": {"promoted": True, "reason": "t"}})
        registry.set_current(version)
    assert server.process is None
    assert refuses_connections(server.port)

    # The same data directory served by the foreground command on another port.
    port = free_ports(1, "127.0.0.1")[0]
    command = [sys.executable, "-m", "tagloop.cli", "s3-server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data), "--bucket", "launcher-bucket"]
    env = {**os.environ, **server.env(), "TAGLOOP_LOG_FORMAT": "text"}
    log_path = tmp_path / "cli.log"
    with log_path.open("wb") as log:
        cli = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        restarted = Registry(
            "launcher-bucket",
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key=server.access_key,
            secret_key=server.secret_key,
            max_attempts=1,
        )
        wait_until(
            lambda: cli.poll() is not None or restarted.current_version() == version,
            timeout=30,
            what="the restarted S3 server",
        )
        assert cli.poll() is None, log_path.read_text()
        assert (restarted.fetch(version, tmp_path / "out") / "model.npz").read_bytes() == (
            b"model bytes"
        )
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert "SIGTERM received" in log_path.read_text()
    wait_until(lambda: refuses_connections(port), timeout=10, what="SeaweedFS to exit")


def test_a_taken_port_fails_fast_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = S3Server(tmp_path / "data", port=port, log_path=tmp_path / "weed.log")
        with pytest.raises(S3ServerError, match=f"(?s)exited with status .*port {port}"):
            server.start(timeout=20)
    assert server.process is None
