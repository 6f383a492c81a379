"""`POST /api/feedback`: validate, rate-limit per client, publish and wait for Pub/Sub.

The answer is 202 only once Pub/Sub returned a message id, so an accepted
correction is never lost; on a publish failure the client gets 503 and may
retry with the same `feedback_id`, which the learner deduplicates.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from inference_service import metrics
from tagloop.channels.bus import Bus, PublishError
from tagloop.domain.messages import Feedback, InvalidMessage
from tagloop.web.api import ApiError

log = logging.getLogger(__name__)

MAX_TRACKED_CLIENTS = 10_000
SERVER_FIELDS = frozenset({"submitted_at", "annotator"})


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


class FeedbackPublisher:
    """Turns a feedback body into a confirmed Pub/Sub message, or an `ApiError`."""

    def __init__(self, bus: Bus, topic: str, timeout: float, limiter: RateLimiter) -> None:
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
