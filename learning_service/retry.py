"""Retry with exponential backoff until success or shutdown.

The learner keeps ingesting while S3 or Pub/Sub is down; the threads that
need them (refit commit, broadcast) wait here instead of dropping work.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 10.0  # cheap calls: after an outage, notice the recovery soon
ADMIN_TIMEOUT = 10.0  # one attempt at creating a topic or subscription


class Stopped(Exception):
    """The learner is shutting down; the retried operation was abandoned."""


def retry(
    operation: str,
    action: Callable[[], T],
    stop: threading.Event,
    counter: Counter,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """Call `action` until it returns; each failure is logged, counted and backed off.

    Any exception is retried: a dependency outage has many shapes (botocore,
    gRPC, socket errors) and the caller has nothing better to do than wait.
    """
    delay = first_delay
    while not stop.is_set():
        try:
            return action()
        except Exception as error:
            counter.labels(operation).inc()
            log.warning(
                "%s failed (%s: %s); retrying in %.1f s",
                operation,
                type(error).__name__,
                error,
                delay,
                extra={"operation": operation},
            )
        if stop.wait(delay * random.uniform(0.8, 1.2)):
            break
        delay = min(max_delay, delay * 2)
    raise Stopped(operation)
