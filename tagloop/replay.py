"""`tagloop replay FILE`: send exported corrections through the public API again (issue 18).

FILE is a `tagloop export` file, CSV or Parquet (pyarrow imported only then).

Each row is posted to `POST /api/feedback` with its own `feedback_id`, so a
replay is idempotent: the learner stores each id once, however often the file
is replayed. Rate limits (429) and outages (503) are waited out with the
server's Retry-After. The annotator and submission time are the server's facts
(docs/security.md), so a replayed row is attributed to the replaying client.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from tagloop.errors import TagloopError

RETRIED = frozenset({429, 503})
MAX_ATTEMPTS = 20
MAX_WAIT_SECONDS = 30.0
TIMEOUT = 30.0


class ReplayError(TagloopError):
    """The file cannot be read, or the API kept refusing to take a correction."""


REPLAYED = ("feedback_id", "title", "tags", "predicted_tags", "model_version")


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield {
                **row,
                "tags": json.loads(row["tags"]),
                "predicted_tags": json.loads(row["predicted_tags"] or "[]"),
            }


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ReplayError(
            "replaying a parquet file needs pyarrow (pip install 'tagloop[dev]')"
        ) from None
    for batch in pq.ParquetFile(path).iter_batches(columns=list(REPLAYED)):
        yield from batch.to_pylist()


def corrections(path: Path) -> Iterator[dict[str, Any]]:
    """The feedback bodies of an export file (`tagloop export`'s CSV or Parquet)."""
    read = _parquet_rows if path.suffix.lower() == ".parquet" else _csv_rows
    try:
        for row in read(path):
            yield {
                "feedback_id": row["feedback_id"],
                "title": row["title"],
                "tags": row["tags"],
                "predicted_tags": row["predicted_tags"] or [],
                "model_version": row["model_version"] or None,
            }
    except (OSError, KeyError, ValueError) as error:
        raise ReplayError(f"{path}: not a tagloop export ({error})") from None


def send(session: requests.Session, url: str, body: dict[str, Any]) -> int:
    """POST one correction, waiting out 429/503; returns the final status."""
    for _ in range(MAX_ATTEMPTS):
        response = session.post(url, json=body, timeout=TIMEOUT)
        if response.status_code not in RETRIED:
            return response.status_code
        try:
            wait = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.1), MAX_WAIT_SECONDS))
    raise ReplayError(f"{body['feedback_id']}: still refused after {MAX_ATTEMPTS} attempts")


def replay(
    path: Path,
    api_url: str,
    progress: Callable[[int, Counter[int]], None] = lambda done, statuses: None,
) -> Counter[int]:
    """Send every correction in `path` to `api_url`; returns the count of each final status."""
    statuses: Counter[int] = Counter()
    url = api_url.rstrip("/") + "/api/feedback"
    with requests.Session() as session:
        for done, body in enumerate(corrections(path), start=1):
            statuses[send(session, url, body)] += 1
            progress(done, statuses)
    return statuses
