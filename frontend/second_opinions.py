"""Titles awaiting a second opinion, asked of the learner for the queue (issue 18).

The queue offers first the titles another annotator already corrected and
nobody else has, so that agreement (and the validated test set) accrues.
The learner knows them (`GET /api/second-opinions`); the UI server asks on
the browser's behalf, naming its annotator so that its own titles are left
out. The ordering is a convenience: when the learner is not configured, slow,
down or answers nonsense, the queue keeps its file order (an empty list), and
the failure is logged and counted, never shown as an error.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode, urlsplit

from prometheus_client import Counter
from urllib3 import connection_from_url
from urllib3.exceptions import HTTPError
from urllib3.util import Timeout

log = logging.getLogger(__name__)

TIMEOUT = Timeout(connect=1.0, read=2.0)
MAX_ANSWER_BYTES = 1024 * 1024

LOOKUPS = Counter(
    "tagloop_ui_second_opinion_lookups_total",
    "Second-opinion lookups the UI made of the learner, by outcome (ok, unreachable, bad_answer).",
    ["outcome"],
)


class SecondOpinions:
    """A pooled client of the learner's second-opinion list."""

    def __init__(self, learner_url: str, pool_size: int = 4) -> None:
        self._pool = connection_from_url(
            learner_url, maxsize=pool_size, timeout=TIMEOUT, retries=False
        )
        self._path = urlsplit(learner_url).path + "/api/second-opinions"

    def titles(self, annotator: str, limit: int) -> list[str]:
        """Up to `limit` titles for `annotator`; [] when the learner cannot say."""
        query = urlencode({"annotator": annotator, "limit": limit})
        try:
            response = self._pool.urlopen(
                "GET", f"{self._path}?{query}", redirect=False, preload_content=False
            )
            try:
                body = response.read(MAX_ANSWER_BYTES + 1)
            finally:
                response.release_conn()
        except (HTTPError, OSError) as error:
            return self._failed("unreachable", f"{type(error).__name__}: {error}")
        if response.status != 200 or len(body) > MAX_ANSWER_BYTES:
            return self._failed("bad_answer", f"status {response.status}, {len(body)} bytes")
        try:
            items = json.loads(body)["items"]
        except (ValueError, KeyError, TypeError) as error:
            return self._failed("bad_answer", f"not the expected JSON: {error}")
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            return self._failed("bad_answer", "items is not a list of titles")
        LOOKUPS.labels("ok").inc()
        return items[:limit]

    @staticmethod
    def _failed(outcome: str, detail: str) -> list[str]:
        LOOKUPS.labels(outcome).inc()
        log.warning(
            "second opinions unavailable (%s): %s; the queue keeps its file order",
            outcome,
            detail,
            extra={"outcome": outcome},
        )
        return []

    def close(self) -> None:
        self._pool.close()
