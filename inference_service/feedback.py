"""`POST /api/feedback`: validate, rate-limit per client, publish and wait for Pub/Sub.

The answer is 202 only once Pub/Sub returned a message id, so an accepted
correction is never lost; on a publish failure the client gets 503 and may
retry with the same `feedback_id`, which the learner deduplicates.
"""

from __future__ import annotations

import itertools
import logging
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference_service import metrics
from tagloop.channels.bus import Bus, PublishError
from tagloop.domain.messages import Feedback, InvalidMessage
from tagloop.web.api import ApiError

log = logging.getLogger(__name__)

MAX_TRACKED_CLIENTS = 10_000
SERVER_FIELDS = frozenset({"submitted_at", "annotator"})
RATE_LIMIT_FILE = "feedback-rate-limit.sqlite"
"""In the multiprocess directory (`tagloop serve` empties it at start; not a metrics `*.db`)."""


class RateLimiter:
    """Token buckets per client key: `rate` tokens/s, at most `burst` stored.

    Per process (each gunicorn worker has its own), bounded in memory: the
    least recently seen clients are forgotten first, which only ever
    forgives them.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """Take a token: 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, updated = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


class SharedRateLimiter:
    """The same token buckets, one table for every worker of a replica (a SQLite file).

    Per-worker buckets let a replica admit workers x burst at once and a client
    landing on several workers got most of a flood through. The table lives in
    the replica's multiprocess directory; one UPSERT per request updates a
    bucket atomically across processes. A bucket idle long enough to be full
    again carries no information and is pruned, so the table holds only the
    clients of the last `burst / rate` seconds. CLOCK_MONOTONIC is system-wide,
    so the workers' clocks agree.
    """

    PRUNE_EVERY = 1000

    def __init__(
        self,
        path: Path,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.rate, self.burst, self.clock = path, rate, burst, clock
        self._local = threading.local()
        self._calls = itertools.count()

    def _db(self) -> sqlite3.Connection:
        """One connection per thread (and per process: created after gunicorn forked)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # rebuilt empty at every start: no durability
            db.execute(
                "CREATE TABLE IF NOT EXISTS buckets"
                " (client TEXT PRIMARY KEY, tokens REAL, updated REAL, allowed INTEGER)"
                " WITHOUT ROWID"
            )
            self._local.db = db
        return db

    def acquire(self, client: str) -> float:
        """Take a token: 0.0 if allowed, else the seconds until one is available."""
        now, burst, rate = self.clock(), float(self.burst), self.rate
        db = self._db()
        refilled = "min(:burst, tokens + (:now - updated) * :rate)"
        tokens, allowed = db.execute(
            "INSERT INTO buckets (client, tokens, updated, allowed)"
            " VALUES (:client, :burst - 1, :now, 1)"
            " ON CONFLICT (client) DO UPDATE SET"
            f" tokens = CASE WHEN {refilled} >= 1 THEN {refilled} - 1 ELSE {refilled} END,"
            f" allowed = {refilled} >= 1, updated = :now"
            " RETURNING tokens, allowed",
            {"client": client, "burst": burst, "now": now, "rate": rate},
        ).fetchone()
        if next(self._calls) % self.PRUNE_EVERY == 0:
            db.execute("DELETE FROM buckets WHERE updated < ?", (now - burst / rate,))
        return 0.0 if allowed else (1.0 - tokens) / rate


def rate_limiter(
    rate: float, burst: int, shared_dir: str | None
) -> RateLimiter | SharedRateLimiter:
    """Shared by the workers when they have a multiprocess directory, else per process."""
    if shared_dir:
        return SharedRateLimiter(Path(shared_dir) / RATE_LIMIT_FILE, rate, burst)
    return RateLimiter(rate, burst)


class FeedbackPublisher:
    """Turns a feedback body into a confirmed Pub/Sub message, or an `ApiError`."""

    def __init__(
        self, bus: Bus, topic: str, timeout: float, limiter: RateLimiter | SharedRateLimiter
    ) -> None:
        self.bus, self.topic, self.timeout, self.limiter = bus, topic, timeout, limiter

    def check_rate(self, client: str) -> None:
        wait = self.limiter.acquire(client)
        if wait > 0:
            metrics.FEEDBACK_RATE_LIMITED.inc()
            raise ApiError(
                429,
                "rate_limited",
                "too much feedback from this client; retry later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def submit(self, body: dict[str, Any], annotator: str) -> str:
        """Validate (the correction contract) and publish; returns the feedback id."""
        # The submission time and the annotator are the server's facts, not a client's claims.
        body = {key: value for key, value in body.items() if key not in SERVER_FIELDS}
        body["annotator"] = annotator
        try:
            feedback = Feedback.from_dict(body)
        except InvalidMessage as error:
            metrics.FEEDBACK_INVALID.labels(error.reason).inc()
            raise ApiError(422, error.reason, error.detail) from None
        try:
            self.bus.publish(self.topic, feedback, timeout=self.timeout)
        except PublishError as error:
            metrics.FEEDBACK_FAILED.inc()
            log.warning("feedback %s not published: %s", feedback.feedback_id, error)
            raise ApiError(
                503,
                "publish_failed",
                "feedback could not be queued; retry with the same feedback_id",
            ) from None
        metrics.FEEDBACK_PUBLISHED.inc()
        return feedback.feedback_id
