"""Fault test on the real local stack: SIGKILL the learner and a replica mid-replay.

Supervisor restarts both. Afterwards every correction that got its 202 is in
the learner's CSV exactly once (acked only once on disk, deduplicated on
redelivery), and both replicas converge on the learner's current version.
Then the whole stack is stopped and started again on the same var directory:
the model and the corpus are still there; `tagloop reset` wipes them.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.stack import (
    StackProcess,
    feedback_rows,
    learner_status,
    loop_env,
    served_version,
    submit,
)
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

REPLAY = 150
KILL_AT = 50


def stored_ids(var_dir: Path) -> Counter[str]:
    with (var_dir / "learner" / "feedback.csv").open(newline="", encoding="utf-8") as handle:
        return Counter(row["feedback_id"] for row in csv.DictReader(handle))


def restarted(stack: StackProcess, program: str, old_pid: int) -> bool:
    return stack.pid(program) not in {0, old_pid}


def test_killed_parts_and_restarts_lose_no_feedback_and_replicas_converge(
    tmp_path: Path, small_corpus: Path
) -> None:
    # A short reconcile period bounds how long a restarted replica may miss a broadcast.
    env = loop_env(small_corpus, TAGLOOP_RECONCILE_SECONDS="5")
    with StackProcess(tmp_path / "var", env=env) as stack:
        learner_pid, replica_pid = stack.pid("learning"), stack.pid("inference-1")
        accepted: list[str] = []
        for index, (title, tags) in enumerate(feedback_rows(REPLAY)):
            if index == KILL_AT:
                os.kill(learner_pid, signal.SIGKILL)
                os.kill(replica_pid, signal.SIGKILL)
            answer = submit(stack.ui_url, title, tags)
            if answer.status_code == 202:
                accepted.append(answer.json()["feedback_id"])
        # The UI fails over to the surviving replica; Pub/Sub holds what the learner misses.
        assert len(accepted) >= REPLAY - 5, f"only {len(accepted)} of {REPLAY} accepted"

        wait_until(lambda: restarted(stack, "learning", learner_pid), timeout=30, what="learner")
        wait_until(lambda: restarted(stack, "inference-1", replica_pid), timeout=30, what="replica")
        wait_until(
            lambda: set(accepted) <= set(stored_ids(stack.var_dir)),
            timeout=120,
            what="every accepted feedback in the CSV",
        )
        counts = stored_ids(stack.var_dir)
        assert [key for key, count in counts.items() if count > 1] == []

        def converged() -> bool:
            status = learner_status(stack)
            current = status["current_version"]
            if status["fit_in_progress"] or status["samples_since_fit"] >= status["refit_every"]:
                return False
            return [served_version(url) for url in stack.replica_urls] == [current, current]

        wait_until(converged, timeout=120, interval=0.5, what="both replicas on the current model")
        status = learner_status(stack)
        assert status["corpus"]["feedback_rows"] == len(counts)

    with StackProcess(tmp_path / "var", env=env) as again:
        restarted_status = learner_status(again)
        assert restarted_status["current_version"] == status["current_version"]
        assert restarted_status["corpus"]["feedback_rows"] == len(counts)
        current = status["current_version"]
        assert [served_version(url) for url in again.replica_urls] == [current, current]
    assert stored_ids(tmp_path / "var") == counts

    reset = [sys.executable, "-m", "tagloop.cli", "reset", "--var-dir", str(tmp_path / "var")]
    result = subprocess.run(reset, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()
