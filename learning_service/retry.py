"""Retry until success or shutdown: transient errors back off, permanent ones wait for a fix.

The learner keeps ingesting while S3 or Pub/Sub is down; the threads that
need them (refit commit, broadcast) wait here instead of dropping work.

A permanent error (permission denied, invalid argument, not found: see
`tagloop.channels.provisioning.is_permanent`) cannot be fixed by retrying:
it is logged once, recorded in `Blocked` (readiness shows the reason) and
re-checked slowly, so a missing IAM grant never becomes a retry storm.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter

from tagloop.channels.provisioning import is_permanent

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 10.0  # cheap calls: after an outage, notice the recovery soon
ADMIN_TIMEOUT = 10.0  # one attempt at creating a topic or subscription
RECHECK_DELAY = 60.0  # a permanent error: look again once a minute, no faster


class Stopped(Exception):
    """The learner is shutting down; the retried operation was abandoned."""


class Blocked:
    """Operations stopped by a permanent error, with the reason; readiness reports them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    def set(self, operation: str, reason: str) -> bool:
        """Record the reason; True if it is new (so the caller logs it once)."""
        with self._lock:
            changed = self._reasons.get(operation) != reason
            self._reasons[operation] = reason
            return changed

    def clear(self, operation: str) -> None:
        with self._lock:
            if self._reasons.pop(operation, None) is not None:
                log.info("%s works again", operation, extra={"operation": operation})

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reasons)


def failed(
    operation: str, error: Exception, blocked: Blocked, counter: Counter, delay: float
) -> float:
    """Log and count one failure; returns how long to wait before the next attempt.

    Transient: a warning per attempt and the caller's backoff `delay`.
    Permanent: one error line per distinct reason and RECHECK_DELAY.
    """
    counter.labels(operation).inc()
    if is_permanent(error):
        if blocked.set(operation, str(error)):
            log.error(
                "%s cannot proceed until this is fixed: %s (re-checking every %.0f s)",
                operation,
                error,
                RECHECK_DELAY,
                extra={"operation": operation, "permanent": True},
            )
        return RECHECK_DELAY
    blocked.clear(operation)
    log.warning(
        "%s failed (%s: %s); retrying in %.1f s",
        operation,
        type(error).__name__,
        error,
        delay,
        extra={"operation": operation},
    )
    return delay


def retry(
    operation: str,
    action: Callable[[], T],
    stop: threading.Event,
    counter: Counter,
    blocked: Blocked | None = None,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """Call `action` until it returns; each failure is logged, counted and waited out.

    Any exception is retried: a dependency outage has many shapes (botocore,
    gRPC, socket errors) and the caller has nothing better to do than wait.
    """
    blocked = blocked if blocked is not None else Blocked()
    delay = first_delay
    while not stop.is_set():
        try:
            result = action()
        except Exception as error:
            wait = failed(operation, error, blocked, counter, delay)
        else:
            blocked.clear(operation)
            return result
        if stop.wait(wait * random.uniform(0.8, 1.2)):
            break
        # After a permanent error's re-check, a transient one starts its backoff afresh.
        delay = first_delay if wait == RECHECK_DELAY else min(max_delay, delay * 2)
    raise Stopped(operation)
