"""The durable feedback store: `feedback.csv` in the data directory, one row per feedback_id.

A batch is appended with one write, flushed and fsync'd before the caller
acks the messages, so an acked correction is on disk. A crash can still cut
the last write short: on start-up a torn tail is detected, logged and
truncated, and the dedupe index is rebuilt from the rows that survived, so a
redelivered message is stored again exactly once. Every record is exactly one
physical line (the correction contract makes titles one line and identifiers
printable), which is what makes the tail check exact.

The store reads back everything it writes: each row is parsed back from its
line before it is appended, and one that would not read back is refused as an
`InvalidMessage` (the ingest loop rejects that one message, not its batch).
A complete line that still cannot be read at start-up (damage by something
other than a crash) is moved to `feedback.quarantine.jsonl` with a log line,
and start-up continues. An exclusive lock on the directory keeps a second
learner from writing too.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from tagloop.domain.messages import Feedback, InvalidMessage, utc_now

log = logging.getLogger(__name__)

FIELDS = (
    "feedback_id",
    "title",
    "tags",
    "predicted_tags",
    "model_version",
    "submitted_at",
    "received_at",
    "annotator",
)
LEGACY_FIELDS = len(FIELDS) - 1
"""Rows written before the annotator column existed have one field less."""
HEADER = (",".join(FIELDS) + "\n").encode()
LEGACY_HEADER = (",".join(FIELDS[:LEGACY_FIELDS]) + "\n").encode()
LOCK_NAME = ".lock"
QUARANTINE_SUFFIX = ".quarantine.jsonl"


class StoreError(RuntimeError):
    """The store cannot be opened safely (foreign file, corruption mid-file, locked)."""


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

    annotator: str | None = None

    @classmethod
    def from_feedback(cls, feedback: Feedback, received_at: str) -> StoredFeedback:
        """The row for a validated message; InvalidMessage if its line would not read back."""
        row = cls(
            feedback_id=feedback.feedback_id,
            title=feedback.title,
            tags=list(feedback.tags),
            predicted_tags=list(feedback.predicted_tags),
            model_version=feedback.model_version or None,
            submitted_at=feedback.submitted_at,
            received_at=received_at,
            annotator=feedback.annotator or None,
        )
        try:
            line = row.to_line()
            readable = line.count(b"\n") == 1 and cls.from_line(line[:-1]) == row
        except (ValueError, UnicodeError):
            readable = False
        if not readable:
            raise InvalidMessage("unstorable", "the correction would not read back from the store")
        return row

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
                self.annotator or "",
            )
        )
        return buffer.getvalue().encode()

    @classmethod
    def from_line(cls, line: bytes) -> StoredFeedback:
        """Parse one stored line (without its newline); ValueError if it is not a valid row."""
        fields = next(csv.reader([line.decode("utf-8")]), [])
        if len(fields) == LEGACY_FIELDS:
            fields.append("")
        if len(fields) != len(FIELDS):
            raise ValueError(f"{len(fields)} fields, want {len(FIELDS)}")
        feedback_id, title, tags, predicted, version, submitted_at, received_at, annotator = fields
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
            annotator=annotator or None,
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
        self.quarantine_path = path.with_name(path.stem + QUARANTINE_SUFFIX)
        self.quarantined = 0
        """Lines moved to the quarantine file when this store was opened."""
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
        """Load every readable row; truncate a torn tail, quarantine unreadable lines."""
        raw = self.path.read_bytes() if self.path.exists() else b""
        header = next((h for h in (HEADER, LEGACY_HEADER) if raw.startswith(h)), None)
        if header is None:
            if HEADER.startswith(raw):  # empty, or a header cut short by a crash
                self._truncate(raw, 0)
                return
            raise StoreError(f"{self.path}: not a tagloop feedback file (unexpected header)")
        *lines, tail = raw[len(header) :].split(b"\n")
        unreadable: list[tuple[int, bytes, str]] = []
        for number, line in enumerate(lines, start=2):
            try:
                row = StoredFeedback.from_line(line)
            except (ValueError, UnicodeDecodeError) as error:
                unreadable.append((number, line, str(error)))
                continue
            if row.feedback_id in self._ids:
                log.warning("duplicate feedback_id %s at line %d ignored", row.feedback_id, number)
            else:
                self._rows.append(row)
                self._ids.add(row.feedback_id)
        if unreadable:
            self._quarantine(unreadable)
        if unreadable or header != HEADER:
            self._rewrite()  # also drops a torn tail: its message was never acked
        else:
            self._truncate(raw, len(raw) - len(tail))

    def _quarantine(self, lines: list[tuple[int, bytes, str]]) -> None:
        """Keep unreadable lines for inspection, out of the way of start-up."""
        at = utc_now()
        entries = "".join(
            json.dumps(
                {
                    "quarantined_at": at,
                    "line": number,
                    "error": error,
                    "preview": line[:500].decode("utf-8", "replace"),
                    "raw_base64": base64.b64encode(line).decode("ascii"),
                }
            )
            + "\n"
            for number, line, error in lines
        )
        with self.quarantine_path.open("a", encoding="utf-8") as handle:
            handle.write(entries)
            handle.flush()
            os.fsync(handle.fileno())
        self.quarantined = len(lines)
        log.error(
            "%d unreadable line(s) of %s moved to %s (lines %s); start-up continues",
            len(lines),
            self.path,
            self.quarantine_path,
            [number for number, _, _ in lines][:20],
            extra={"quarantined": len(lines), "quarantine_file": str(self.quarantine_path)},
        )

    def _rewrite(self) -> None:
        """Replace the file atomically with the header and the rows loaded."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as handle:
            handle.write(HEADER + b"".join(row.to_line() for row in self._rows))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        _fsync_directory(self.path.parent)
        log.warning("rewrote %s with %d rows", self.path, len(self._rows))

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
