"""Off-disk copies of feedback.csv, and `tagloop restore`, which brings one back.

The CSV is the only state the learner cannot rebuild: models are in the
registry, and unacknowledged feedback is redelivered by Pub/Sub. So every
TAGLOOP_BACKUP_INTERVAL_SECONDS (when rows were added since the last copy)
the learner uploads a consistent snapshot of it to the model bucket under
`backups/feedback.csv`. The bucket is versioned, so older copies remain as
noncurrent versions. Feedback acked after the last copy is lost with the disk;
the disk's own scheduled backups (Terraform, Backup for GKE) narrow that gap.

`tagloop restore` downloads the copy into an empty data directory (the learner
stopped), checks it parses as a feedback file, and moves it into place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from learning_service.metrics import LearnerMetrics
from learning_service.store import HEADER, FeedbackStore
from tagloop.channels.registry import Registry
from tagloop.errors import TagloopError

log = logging.getLogger(__name__)

BACKUP_KEY = "backups/feedback.csv"
FEEDBACK_NAME = "feedback.csv"


class RestoreError(TagloopError):
    """The backup cannot be restored here; the message says why."""


class Backup(threading.Thread):
    """Copies feedback.csv to the bucket periodically while rows were added."""

    def __init__(
        self,
        store: FeedbackStore,
        registry: Registry,
        interval: float,
        stop: threading.Event,
        metrics: LearnerMetrics,
    ) -> None:
        super().__init__(name="backup", daemon=True)
        self.store, self.registry, self.interval = store, registry, interval
        self.stop, self.metrics = stop, metrics
        self._copied_rows: int | None = None

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.copy()

    def copy(self) -> bool:
        """One copy if rows changed since the last; False if it failed (tried again next time)."""
        data, rows = self.store.snapshot()
        if rows == self._copied_rows:
            return True
        try:
            self.registry.client.put_object(
                Bucket=self.registry.bucket, Key=BACKUP_KEY, Body=data, ContentType="text/csv"
            )
        except Exception as error:  # S3 down: the next interval tries again
            self.metrics.retries.labels("backup.feedback_csv").inc()
            log.warning("backing up %s failed: %s", self.store.path, error)
            return False
        self._copied_rows = rows
        self.metrics.backup_last_success.set(time.time())
        log.info(
            "backed up %d feedback rows to s3://%s/%s",
            rows,
            self.registry.bucket,
            BACKUP_KEY,
            extra={"rows": rows},
        )
        return True


def restore(registry: Registry, data_dir: Path, force: bool = False, version_id: str = "") -> int:
    """Rebuild `data_dir`'s feedback.csv from the bucket; returns the rows restored.

    Refuses to overwrite a feedback file with rows unless `force`; the copy is
    verified (it must load as a feedback store) before it replaces anything.
    `version_id` picks an older copy (the bucket keeps noncurrent versions).
    """
    target = data_dir / FEEDBACK_NAME
    if target.exists() and not force and target.read_bytes() not in (b"", HEADER):
        raise RestoreError(f"{target} already holds feedback; pass --force to replace it")
    data_dir.mkdir(parents=True, exist_ok=True)
    options = {"VersionId": version_id} if version_id else {}
    try:
        answer = registry.client.get_object(Bucket=registry.bucket, Key=BACKUP_KEY, **options)
        data = answer["Body"].read()
    except Exception as error:
        raise RestoreError(f"cannot read s3://{registry.bucket}/{BACKUP_KEY}: {error}") from None
    staging = data_dir / ".restore"
    staging.mkdir(exist_ok=True)
    candidate = staging / FEEDBACK_NAME
    candidate.write_bytes(data)
    try:
        store = FeedbackStore(candidate)  # parses every row; refuses a damaged file
    except Exception as error:
        raise RestoreError(f"the backup is not a valid feedback file: {error}") from None
    rows = len(store)
    store.close()
    with candidate.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(candidate, target)
    for leftover in staging.iterdir():
        leftover.unlink()
    staging.rmdir()
    return rows
