"""`tagloop up` itself: Ctrl+C during start-up, and a part that cannot start.

(Restarts that keep the state, and `reset`, are covered end to end in test_e2e_fault.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tagloop_dev.stack.config import supervisor_socket
from tagloop_dev.stack.supervision import Supervisor
from tests.fixtures.stack import StackProcess, alive, free_base_port
from tests.fixtures.wait import wait_until


def test_ctrl_c_during_start_up_stops_every_part(tmp_path: Path) -> None:
    stack = StackProcess(tmp_path / "var")
    try:
        stack.start(until="ready on port")  # the first part is up, the others are starting
        pids = [stack.pid("pubsub"), stack.pid("s3")]
        assert all(pids), stack.output()
        supervisord = int((tmp_path / "var/supervisor/supervisord.pid").read_text())
    finally:
        status = stack.stop()
    assert status == 0, stack.output()
    assert "up: stopped" in stack.output()
    assert not stack.supervisor.running()
    wait_until(
        lambda: not any(alive(pid) for pid in [*pids, supervisord]),
        timeout=10,
        what="every part to be gone",
    )


def test_a_part_that_cannot_start_fails_up_with_its_log(tmp_path: Path) -> None:
    base = free_base_port()
    command = [sys.executable, "-m", "tagloop.cli", "up", "--base-port", str(base)]
    # Long enough for a loaded machine to import the learner and let it fail
    # at least once (about 13 s at a load average of 16 on two cores).
    command += ["--var-dir", str(tmp_path / "var"), "--timeout", "45"]
    result = subprocess.run(
        command,
        env={**os.environ, "TAGLOOP_REFIT_EVERY": "0"},  # the learner refuses to start
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert any(
        f"learning: {why}" in result.stderr for why in ("not ready in time", "gave up restarting")
    )
    assert "TAGLOOP_REFIT_EVERY must be" in result.stderr  # the end of the learner's log
    assert "up: stopped" in result.stdout
    assert not Supervisor(supervisor_socket(tmp_path / "var")).running()
