"""`tagloop export`: the stored corrections as a file others can read (issue 18).

Reads the learner's `feedback.csv` without its lock (rows are appended whole,
so a reader sees complete lines plus at most a torn tail, which is skipped),
and writes every readable row, with its annotator, model version and
timestamps, in the store's own column layout (tags as JSON lists).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from learning_service.store import HEADER, LEGACY_HEADER, StoredFeedback
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


def export(store_csv: Path, out: Path) -> int:
    """Write the rows to `out` (.csv) atomically; returns how many."""
    if out.suffix.lower() != ".csv":
        raise ExportError(f"{out}: the export format is CSV (name the file *.csv)")
    rows = read_rows(store_csv)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_bytes(HEADER + b"".join(row.to_line() for row in rows))
    os.replace(temporary, out)
    return len(rows)
