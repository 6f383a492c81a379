"""`tagloop up` itself: Ctrl+C at any time stops everything; state survives a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.stack import (
    StackProcess,
    feedback_rows,
    learner_status,
    loop_env,
    served_version,
    submit,
)
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


def test_state_survives_a_restart_and_reset_wipes_it(tmp_path: Path, small_corpus: Path) -> None:
    var_dir = tmp_path / "var"
    with StackProcess(var_dir, env=loop_env(small_corpus)) as first:
        for title, tags in feedback_rows(3):
            assert submit(first.ui_url, title, tags).status_code == 202
        wait_until(
            lambda: learner_status(first)["corpus"]["feedback_rows"] == 3,
            timeout=30,
            what="the feedback on disk",
        )
        version = learner_status(first)["current_version"]

    with StackProcess(var_dir, env=loop_env(small_corpus)) as second:
        status = learner_status(second)
        assert status["current_version"] == version  # no new bootstrap model
        assert status["corpus"]["feedback_rows"] == 3
        assert [served_version(url) for url in second.replica_urls] == [version, version]

    result = subprocess.run(
        [sys.executable, "-m", "tagloop.cli", "reset", "--var-dir", str(var_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not var_dir.exists()
