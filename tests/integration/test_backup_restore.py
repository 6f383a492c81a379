"""Backups of feedback.csv to the bucket (real SeaweedFS) and `tagloop restore`.

The learner copies its CSV to the bucket while feedback arrives; after the
disk is "lost", `tagloop restore` rebuilds the data directory from the copy
and a learner started on it has every row back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from learning_service.backup import BACKUP_KEY
from tagloop.domain.messages import Feedback
from tests.fixtures.learning import LearnerStack
from tests.fixtures.wait import wait_until

ROWS = 5
STARTUP_SECONDS = 180  # the bootstrap fit on a machine shared with other work


def restore(stack: LearnerStack, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "TAGLOOP_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "tagloop.cli", "restore", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_feedback_is_backed_up_and_restored_into_a_new_data_directory(
    learner_stack: LearnerStack, tmp_path: Path
) -> None:
    learner_stack.subscribe_learner()
    learner = learner_stack.learner(TAGLOOP_BACKUP_INTERVAL_SECONDS="1").start(
        timeout=STARTUP_SECONDS
    )
    for index in range(ROWS):
        learner_stack.bus.publish(
            learner_stack.feedback_topic,
            Feedback(title=f"How to read file number {index} in Python?", tags=["python"]),
        )
    wait_until(
        lambda: learner.metric("tagloop_feedback_accepted_total") == ROWS,
        timeout=30,
        what="the learner to store the feedback",
    )

    def backed_up() -> bytes | None:
        s3 = learner_stack.registry.client
        data: bytes = s3.get_object(Bucket=learner_stack.registry.bucket, Key=BACKUP_KEY)[
            "Body"
        ].read()
        return data if data.count(b"\n") == ROWS + 1 else None

    copy = wait_until(backed_up, timeout=30, what="a backup with every row")
    assert learner.metric("tagloop_backup_last_success_timestamp_seconds") > 0
    assert learner.stop() == 0
    assert copy == learner_stack.feedback_csv().read_bytes()

    # The disk is lost: restore into an empty directory, and a learner has every row back.
    fresh = tmp_path / "restored"
    result = restore(learner_stack, fresh)
    assert result.returncode == 0, result.stderr
    assert f"restored {ROWS} feedback rows" in result.stderr
    assert (fresh / "feedback.csv").read_bytes() == copy
    assert sorted(p.name for p in fresh.iterdir()) == ["feedback.csv"]

    again = learner_stack.learner(TAGLOOP_DATA_DIR=str(fresh)).start(timeout=STARTUP_SECONDS)
    assert again.get("/api/status")["corpus"]["feedback_rows"] == ROWS


def test_restore_refuses_to_overwrite_feedback_unless_forced(
    learner_stack: LearnerStack, tmp_path: Path
) -> None:
    learner_stack.registry.client.put_object(
        Bucket=learner_stack.registry.bucket,
        Key=BACKUP_KEY,
        Body=b"not,a,feedback,file\n",
    )
    existing = tmp_path / "data"
    existing.mkdir()
    (existing / "feedback.csv").write_text("precious rows\n" * 3)
    refused = restore(learner_stack, existing)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert (existing / "feedback.csv").read_text() == "precious rows\n" * 3

    # Forced, a damaged backup is still refused, and nothing is replaced.
    damaged = restore(learner_stack, existing, "--force")
    assert damaged.returncode == 2 and "not a valid feedback file" in damaged.stderr
    assert (existing / "feedback.csv").read_text() == "precious rows\n" * 3


def test_restore_without_a_backup_says_so(learner_stack: LearnerStack, tmp_path: Path) -> None:
    result = restore(learner_stack, tmp_path / "empty")
    assert result.returncode == 2
    assert f"cannot read s3://{learner_stack.registry.bucket}/{BACKUP_KEY}" in result.stderr
