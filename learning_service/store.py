"""The durable feedback store: `feedback.csv` in the data directory, one row per feedback_id.

A batch is appended with one write, flushed and fsync'd before the caller
acks the messages, so an acked correction is on disk. A crash can still cut
the last write short: on start-up a torn tail is detected, logged and
truncated, and the dedupe index is rebuilt from the rows that survived, so a
redelivered message is stored again exactly once. Every record is exactly one
physical line (titles are folded to one line, identifiers with control
characters are refused), which is what makes the tail check exact. An
exclusive lock on the directory keeps a second learner from writing too.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tagloop.domain.messages import Feedback, InvalidMessage

log = logging.getLogger(__name__)

FIELDS = (
    "feedback_id",
    "title",
    "tags",
    "predicted_tags",
    "model_version",
    "submitted_at",
    "received_at",
)
HEADER = (",".join(FIELDS) + "\n").encode()
LOCK_NAME = ".lock"


class StoreError(RuntimeError):
    """The store cannot be opened safely (foreign file, corruption mid-file, locked)."""


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def one_line(text: str) -> str:
    """Control characters become spaces and whitespace runs collapse: a title is one line."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(cleaned.split())


def _tag_list(raw: str, allow_empty: bool) -> list[str]:
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ValueError("not a JSON list of tags")
    if not value and not allow_empty:
        raise ValueError("empty tag list")
    return value


@dataclass(frozen=True)
class StoredFeedback:
    """One accepted correction as it is kept on disk and used for training."""

    feedback_id: str
    title: str
    tags: list[str]
    predicted_tags: list[str]
    model_version: str | None
    submitted_at: str
    received_at: str

    @classmethod
    def from_feedback(cls, feedback: Feedback, received_at: str) -> StoredFeedback:
        """The row for a validated message; InvalidMessage if it cannot be one CSV line."""
        if _has_control(feedback.feedback_id):
            raise InvalidMessage("bad_feedback_id", "feedback_id contains control characters")
        if feedback.model_version is not None and _has_control(feedback.model_version):
            raise InvalidMessage("wrong_type", "model_version contains control characters")
        return cls(
            feedback_id=feedback.feedback_id,
            title=one_line(feedback.title),
            tags=list(feedback.tags),
            predicted_tags=list(feedback.predicted_tags),
            model_version=feedback.model_version or None,
            submitted_at=feedback.submitted_at,
            received_at=received_at,
        )

    def to_line(self) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(
            (
                self.feedback_id,
                self.title,
                json.dumps(self.tags),
                json.dumps(self.predicted_tags),
                self.model_version or "",
                self.submitted_at,
                self.received_at,
            )
        )
        return buffer.getvalue().encode()

    @classmethod
    def from_line(cls, line: bytes) -> StoredFeedback:
        """Parse one stored line (without its newline); ValueError if it is not a valid row."""
        fields = next(csv.reader([line.decode("utf-8")]), [])
        if len(fields) != len(FIELDS):
            raise ValueError(f"{len(fields)} fields, want {len(FIELDS)}")
        feedback_id, title, tags, predicted, version, submitted_at, received_at = fields
        if not feedback_id or not title or not submitted_at or not received_at:
            raise ValueError("empty required field")
        return cls(
            feedback_id=feedback_id,
            title=title,
            tags=_tag_list(tags, allow_empty=False),
            predicted_tags=_tag_list(predicted, allow_empty=True),
            model_version=version or None,
            submitted_at=submitted_at,
            received_at=received_at,
        )


class FeedbackStore:
    """Append-only CSV with an in-memory dedupe index and the rows for training.

    Thread-safe: the ingest loop appends while the refitter reads a prefix.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rows: list[StoredFeedback] = []
        self._ids: set[str] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._dir_lock = self._lock_directory(path.parent / LOCK_NAME)
        try:
            self._recover()
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size == 0:
                self._write(HEADER)
                _fsync_directory(path.parent)
        except BaseException:
            os.close(self._dir_lock)
            raise

    @staticmethod
    def _lock_directory(lock_path: Path) -> int:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"{lock_path}: another learner is using this data directory") from None
        return fd

    def _recover(self) -> None:
        """Load every complete row; truncate a torn or garbled tail, refuse mid-file damage."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        if not raw.startswith(HEADER):
            if HEADER.startswith(raw):  # empty, or a header cut short by a crash
                self._truncate(raw, 0)
                return
            raise StoreError(f"{self.path}: not a tagloop feedback file (unexpected header)")
        keep = offset = len(HEADER)
        bad: list[int] = []
        *lines, _tail = raw[offset:].split(b"\n")
        for number, line in enumerate(lines, start=2):
            offset += len(line) + 1
            try:
                row = StoredFeedback.from_line(line)
            except (ValueError, UnicodeDecodeError) as error:
                bad.append(number)
                log.debug("line %d of %s is not a valid row: %s", number, self.path, error)
                continue
            if bad:
                raise StoreError(
                    f"{self.path}: malformed line(s) {bad} before valid line {number}; "
                    "the file was damaged by something other than a crash, inspect it"
                )
            if row.feedback_id in self._ids:
                log.warning("duplicate feedback_id %s at line %d ignored", row.feedback_id, number)
            else:
                self._rows.append(row)
                self._ids.add(row.feedback_id)
            keep = offset
        self._truncate(raw, keep)

    def _truncate(self, raw: bytes, keep: int) -> None:
        if keep == len(raw):
            return
        log.warning(
            "repairing %s: truncating a torn tail of %d bytes after %d rows",
            self.path,
            len(raw) - keep,
            len(self._rows),
            extra={"torn_bytes": len(raw) - keep, "rows": len(self._rows)},
        )
        with self.path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def _write(self, data: bytes) -> None:
        """Append all of `data` durably, or leave the file as it was and raise OSError."""
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, start)  # never leave a partial row for the next append
            raise

    def append(self, items: list[StoredFeedback]) -> list[StoredFeedback]:
        """Durably store the items whose feedback_id is new; returns them (first copy wins)."""
        with self._lock:
            fresh: dict[str, StoredFeedback] = {}
            for item in items:
                if item.feedback_id not in self._ids and item.feedback_id not in fresh:
                    fresh[item.feedback_id] = item
            if fresh:
                self._write(b"".join(item.to_line() for item in fresh.values()))
                self._rows.extend(fresh.values())
                self._ids.update(fresh)
            return list(fresh.values())

    def snapshot(self) -> tuple[bytes, int]:
        """The file's bytes and row count at one instant (appends wait): a consistent backup."""
        with self._lock:
            return self.path.read_bytes(), len(self._rows)

    def rows(self, stop: int | None = None) -> list[StoredFeedback]:
        """The first `stop` rows (all by default), in arrival order."""
        with self._lock:
            return self._rows[:stop]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, feedback_id: object) -> bool:
        return feedback_id in self._ids

    def close(self) -> None:
        """Release the file and the directory lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            os.close(self._dir_lock)
            self._fd = None


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
