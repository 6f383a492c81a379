"""`tagloop up` itself: Ctrl+C while parts are still starting stops everything cleanly.

(Restarts that keep the state, and `reset`, are covered end to end in test_e2e_fault.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.fixtures.stack import StackProcess
from tests.fixtures.wait import wait_until


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
