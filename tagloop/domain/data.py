"""Loading the labelled and unlabelled TSV files, with validation.

A bad file must produce a clear error (missing columns) or a counted, logged
skip (bad rows), never an obscure failure deep inside scikit-learn.
"""

from __future__ import annotations

import ast
import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tagloop.domain.tags import InvalidTag, normalize_tags
from tagloop.errors import TagloopError

log = logging.getLogger(__name__)


class DataError(TagloopError, ValueError):
    """The file cannot be used at all (unreadable, missing columns, no valid rows)."""


@dataclass
class LabeledData:
    titles: list[str]
    tags: list[list[str]]
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows left out, by reason (empty_title, bad_tags, no_tags, duplicate)."""

    def __len__(self) -> int:
        return len(self.titles)


def parse_tag_list(raw: object) -> list[str]:
    """Parse a `['php', 'mysql']` cell (a Python list literal, never eval'd)."""
    if not isinstance(raw, str):
        raise ValueError("tags cell is empty")
    value = ast.literal_eval(raw)
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("tags cell is not a list of strings")
    return normalize_tags(value)


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL,
            on_bad_lines="warn",
        )
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path}: not a readable UTF-8 TSV file ({error})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )
    return frame


def load_labeled(path: str | Path) -> LabeledData:
    """Load a `title<TAB>tags` file; invalid and duplicate rows are skipped and counted."""
    path = Path(path)
    frame = _read(path, ("title", "tags"))
    data = LabeledData(titles=[], tags=[])
    seen: set[tuple[str, tuple[str, ...]]] = set()
    skipped: dict[str, int] = {}
    for raw_title, raw_tags in zip(frame["title"], frame["tags"], strict=True):
        title = raw_title.strip()
        reason = None
        tags: list[str] = []
        if not title:
            reason = "empty_title"
        else:
            try:
                tags = parse_tag_list(raw_tags)
            except (ValueError, SyntaxError, InvalidTag, MemoryError, RecursionError):
                reason = "bad_tags"
            else:
                if not tags:
                    reason = "no_tags"
                elif (title, tuple(sorted(tags))) in seen:
                    reason = "duplicate"
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add((title, tuple(sorted(tags))))
        data.titles.append(title)
        data.tags.append(tags)
    data.skipped = skipped
    if skipped:
        log.warning("skipped rows while loading %s: %s", path, skipped)
    if not data.titles:
        raise DataError(f"{path}: no valid rows")
    return data


def load_titles(path: str | Path) -> list[str]:
    """Load the `title` column of a TSV file, dropping empty titles."""
    frame = _read(Path(path), ("title",))
    return [t.strip() for t in frame["title"] if t.strip()]
