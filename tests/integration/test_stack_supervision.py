"""supervisord under the stack's own configuration, with a real part (the emulator)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop_dev.stack.config import Ports, Stack, StackError, prepare, reset
from tagloop_dev.stack.run import Probes
from tagloop_dev.stack.supervision import Supervisor, shutdown, spawn_supervisord
from tests.fixtures.stack import alive, free_base_port
from tests.fixtures.wait import wait_until


def test_supervisor_restarts_a_killed_part_and_stops_it_on_shutdown(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "var", Path.cwd(), Ports.from_base(free_base_port()))
    prepare(stack)
    supervisord = spawn_supervisord(stack.conf_path, stack.log_dir / "supervisord.out")
    supervisor = Supervisor(stack.socket_path)
    try:
        wait_until(supervisor.running, timeout=20, what="supervisord's socket")
        with pytest.raises(StackError, match="is running"):
            reset(stack.var_dir)
        pubsub = next(p for p in stack.programs() if p.name == "pubsub")
        probes = Probes(stack, bucket="unused")
        supervisor.start(pubsub.supervisor_name)
        wait_until(lambda: probes.ready(pubsub), timeout=30, what="the emulator")
        first = supervisor.pid(pubsub.supervisor_name)

        os.kill(first, signal.SIGKILL)
        second = wait_until(
            lambda: (pid := supervisor.pid(pubsub.supervisor_name)) not in {0, first} and pid,
            timeout=30,
            what="supervisor to restart the emulator",
        )
        wait_until(lambda: probes.ready(pubsub), timeout=30, what="the restarted emulator")
        assert (stack.var_dir / "pubsub").is_dir()  # it runs with the stack's data dir
    finally:
        status = shutdown(supervisord)
    assert status == 0
    assert not alive(second)
    assert not supervisor.running()


def test_up_names_the_taken_port_and_exits_before_starting_anything(tmp_path: Path) -> None:
    base = free_base_port()
    learner_port = Ports.from_base(base).learning
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", learner_port))
        listener.listen()
        up = [sys.executable, "-m", "tagloop.cli", "up", "--base-port", str(base)]
        result = subprocess.run(
            [*up, "--var-dir", str(tmp_path / "var")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {learner_port} (learning) is already in use" in result.stderr
    assert not (tmp_path / "var").exists()
