"""Durable state for `--data-dir`: topics, subscriptions and unacknowledged messages.

SQLite in WAL mode with `synchronous=FULL`, so a commit is on disk when it
returns. The broker stages changes from the event loop and awaits `commit()`;
one writer thread commits everything staged so far in a single transaction
(group commit), so a burst of concurrent publishes costs one fsync, not one
each. On start the database is compacted: rows the broker can no longer
reach (messages nobody holds, deliveries to deleted subscriptions) go away.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, pb BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY, pb BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, pb BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    sub TEXT NOT NULL, msg INTEGER NOT NULL, PRIMARY KEY (sub, msg)
) WITHOUT ROWID;
"""

COMPACT = """
DELETE FROM pending WHERE sub NOT IN (SELECT name FROM subscriptions);
DELETE FROM messages WHERE id NOT IN (SELECT msg FROM pending);
"""

Row = tuple[object, ...]
Op = tuple[str, Sequence[Row]]


@dataclass
class Snapshot:
    """Everything needed to rebuild the broker, pending deliveries in publish order."""

    topics: list[bytes]
    subscriptions: list[bytes]
    messages: list[tuple[int, bytes]]
    pending: list[tuple[str, int]]
    next_id: int


class Store:
    """Stage changes from the event loop; a writer thread commits them in groups."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Two emulators on one directory would silently diverge; the lock dies with us.
        self._lock_file = (data_dir / "pubsub.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"{data_dir} is in use by another emulator") from None
        self.path = data_dir / "pubsub.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._cond = threading.Condition()
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def load(self) -> Snapshot:
        """Compact, then read the state back (call before `start`)."""
        db = self._db
        db.executescript(f"BEGIN; {COMPACT} COMMIT;")
        if db.execute("PRAGMA freelist_count").fetchone()[0] > 1000:
            db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = db.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        return Snapshot(
            topics=[pb for (pb,) in db.execute("SELECT pb FROM topics")],
            subscriptions=[pb for (pb,) in db.execute("SELECT pb FROM subscriptions")],
            messages=db.execute("SELECT id, pb FROM messages ORDER BY id").fetchall(),
            pending=db.execute("SELECT sub, msg FROM pending ORDER BY msg").fetchall(),
            next_id=row[0] if row else 1,
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._write_loop, name="pubsub-store", daemon=True)
        self._thread.start()

    # -- staging (event-loop thread) ---------------------------------------

    def _stage(self, sql: str, rows: Sequence[Row]) -> None:
        with self._cond:
            self._ops.append((sql, rows))

    def put_topic(self, name: str, pb: bytes) -> None:
        self._stage("INSERT OR REPLACE INTO topics VALUES (?, ?)", [(name, pb)])

    def delete_topic(self, name: str) -> None:
        self._stage("DELETE FROM topics WHERE name = ?", [(name,)])

    def put_subscription(self, name: str, pb: bytes) -> None:
        self._stage("INSERT OR REPLACE INTO subscriptions VALUES (?, ?)", [(name, pb)])

    def delete_subscription(self, name: str, orphaned: list[int]) -> None:
        self._stage("DELETE FROM subscriptions WHERE name = ?", [(name,)])
        self._stage("DELETE FROM pending WHERE sub = ?", [(name,)])
        self._delete_messages(orphaned)

    def set_next_id(self, next_id: int) -> None:
        self._stage("INSERT OR REPLACE INTO meta VALUES ('next_id', ?)", [(next_id,)])

    def add_messages(self, messages: list[tuple[int, bytes]], subscriptions: list[str]) -> None:
        self._stage("INSERT INTO messages VALUES (?, ?)", messages)
        self._stage(
            "INSERT INTO pending VALUES (?, ?)",
            [(sub, msg_id) for sub in subscriptions for msg_id, _ in messages],
        )

    def remove_pending(self, subscription: str, acked: list[int], orphaned: list[int]) -> None:
        self._stage(
            "DELETE FROM pending WHERE sub = ? AND msg = ?", [(subscription, m) for m in acked]
        )
        self._delete_messages(orphaned)

    def _delete_messages(self, ids: list[int]) -> None:
        if ids:
            self._stage("DELETE FROM messages WHERE id = ?", [(m,) for m in ids])

    def commit(self) -> asyncio.Future[None]:
        """A future that completes once everything staged so far is durable."""
        assert self._loop is not None, "Store.start() was not called"
        future = self._loop.create_future()
        with self._cond:
            self._waiters.append(future)
            self._cond.notify()
        return future

    # -- writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._closing:
                    self._cond.wait()
                ops, waiters = self._ops, self._waiters
                self._ops, self._waiters = [], []
                closing = self._closing
            error = self._apply(ops)
            if waiters:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_settle, waiters, error)
            if closing and not ops:
                break
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()
        self._lock_file.close()

    def _apply(self, ops: list[Op]) -> BaseException | None:
        if not ops:
            return None
        try:
            self._db.execute("BEGIN")
            for sql, rows in ops:
                self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            log.exception("could not persist %d changes", len(ops))
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return error
        return None

    def close(self) -> None:
        """Commit whatever is staged and stop the writer (call from the loop thread)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        else:
            self._db.close()
            self._lock_file.close()


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in waiters:
        if future.done():
            continue  # the RPC that waited was cancelled
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
