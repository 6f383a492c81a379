"""Agreement between annotators who corrected the same title (issue 18).

For every title (case-folded) that two or more distinct annotators corrected,
each annotator's latest tags are compared pairwise:

- overall: the mean Jaccard similarity of the two tag sets over all pairs;
- per tag: positive specific agreement, 2·both / (A has it + B has it), over
  the pairs in which at least one annotator gave the tag.

Corrections without an annotator (stored before annotator ids) are not
compared: nobody can tell whether two of them came from two people.

Titles are compared normalised (`normalize_title`, as the validated set
does). The titles exactly one annotator corrected are kept in arrival order,
so the queue can offer them to someone else first (`awaiting_second_opinion`).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tagloop.domain.text import normalize_title


class Agreement:
    """Latest tags per (title, annotator); summaries computed on demand (thread-safe)."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, frozenset[str]]] = {}
        self._shared: set[str] = set()  # titles with at least two annotators
        self._single: dict[str, tuple[str, str]] = {}  # key -> (title, its one annotator)
        self._lock = threading.Lock()

    def add(self, title: str, tags: Iterable[str], annotator: str | None) -> None:
        if annotator is None:
            return
        key = normalize_title(title)
        with self._lock:
            by_annotator = self._labels.setdefault(key, {})
            by_annotator[annotator] = frozenset(tags)
            if len(by_annotator) >= 2:
                self._shared.add(key)
                self._single.pop(key, None)
            else:
                self._single.setdefault(key, (title, annotator))

    def awaiting_second_opinion(self, annotator: str | None, limit: int) -> list[str]:
        """Up to `limit` titles one other annotator corrected and nobody else yet, oldest first.

        The title is given as its first annotator wrote it; `annotator`'s own
        titles are left out (a second opinion must come from someone else).
        """
        with self._lock:
            waiting = (title for title, by in self._single.values() if by != annotator)
            return list(itertools.islice(waiting, limit))

    def summary(self, top: int = 50) -> dict[str, Any]:
        """Overall and per-tag agreement; per tag, the `top` tags compared most often."""
        similarities: list[float] = []
        both: Counter[str] = Counter()
        given: Counter[str] = Counter()
        compared: Counter[str] = Counter()
        with self._lock:
            groups = [list(self._labels[key].values()) for key in self._shared]
        for group in groups:
            for first, second in itertools.combinations(group, 2):
                union = first | second
                similarities.append(len(first & second) / len(union) if union else 1.0)
                for tag in union:
                    compared[tag] += 1
                    both[tag] += tag in first and tag in second
                    given[tag] += (tag in first) + (tag in second)
        return {
            "titles": len(groups),
            "pairs": len(similarities),
            "overall": sum(similarities) / len(similarities) if similarities else None,
            "per_tag": {
                tag: {"agreement": 2 * both[tag] / given[tag], "pairs": pairs}
                for tag, pairs in compared.most_common(top)
            },
        }

    def overall(self) -> float:
        """The overall agreement for the gauge (NaN until two annotators share a title)."""
        value = self.summary(top=0)["overall"]
        return float("nan") if value is None else float(value)
