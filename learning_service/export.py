"""`tagloop export`: the stored corrections as a file others can read (issue 18).

Reads the learner's `feedback.csv` without its lock (rows are appended whole,
so a reader sees complete lines plus at most a torn tail, which is skipped),
and writes every readable row, with its annotator, model version and
timestamps. `FILE.csv` keeps the store's own column layout (tags as JSON
lists); `FILE.parquet` has the same columns typed (tags as lists of strings,
timestamps as UTC timestamps, missing values as nulls); pyarrow is imported
only then. `validated_only` keeps the corrections that make up the validated
set: the rows of its titles whose tags are the agreed ones (validated.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from learning_service.store import FIELDS, HEADER, LEGACY_HEADER, StoredFeedback
from learning_service.validated import build, tag_set
from tagloop.domain.text import normalize_title
from tagloop.errors import TagloopError

log = logging.getLogger(__name__)


class ExportError(TagloopError):
    """The store cannot be read or the output format is not supported."""


def read_rows(store_csv: Path) -> list[StoredFeedback]:
    """Every readable row of a feedback.csv, first copy of each feedback_id, in order."""
    try:
        raw = store_csv.read_bytes()
    except OSError as error:
        raise ExportError(f"{store_csv}: {error.strerror}") from None
    header = next((h for h in (HEADER, LEGACY_HEADER) if raw.startswith(h)), None)
    if header is None:
        raise ExportError(f"{store_csv}: not a tagloop feedback file")
    rows: dict[str, StoredFeedback] = {}
    *lines, _torn = raw[len(header) :].split(b"\n")
    for number, line in enumerate(lines, start=2):
        try:
            row = StoredFeedback.from_line(line)
        except (ValueError, UnicodeDecodeError) as error:
            log.warning("skipping unreadable line %d of %s: %s", number, store_csv, error)
            continue
        rows.setdefault(row.feedback_id, row)
    return list(rows.values())


def validated_rows(rows: Sequence[StoredFeedback]) -> list[StoredFeedback]:
    """The rows behind the validated set: its titles, with exactly the agreed tags."""
    agreed = build(rows).entries
    return [
        row
        for row in rows
        if row.annotator and agreed.get(normalize_title(row.title)) == tag_set(row.tags)
    ]


def _timestamp(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def _write_parquet(rows: Sequence[StoredFeedback], out: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("a parquet export needs pyarrow (pip install 'tagloop[dev]')") from None
    tags, when = pa.list_(pa.string()), pa.timestamp("ms", tz="UTC")
    types = {"tags": tags, "predicted_tags": tags, "submitted_at": when, "received_at": when}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in FIELDS])
    columns: dict[str, list[Any]] = {name: [getattr(row, name) for row in rows] for name in FIELDS}
    for name in ("submitted_at", "received_at"):
        columns[name] = [_timestamp(value) for value in columns[name]]
    pq.write_table(pa.table(columns, schema=schema), out)


def export(store_csv: Path, out: Path, validated_only: bool = False) -> int:
    """Write the rows to `out` (.csv or .parquet) atomically; returns how many."""
    suffix = out.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise ExportError(f"{out}: name the file *.csv or *.parquet")
    rows = read_rows(store_csv)
    if validated_only:
        rows = validated_rows(rows)
    temporary = out.with_name(out.name + ".tmp")
    if suffix == ".csv":
        temporary.write_bytes(HEADER + b"".join(row.to_line() for row in rows))
    else:
        _write_parquet(rows, temporary)
    os.replace(temporary, out)
    return len(rows)
