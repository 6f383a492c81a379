"""What drift is measured against: the training corpus's words and tag frequencies.

Two signals say that live traffic has moved away from what a model learned:
the share of title words the model has never seen (out of vocabulary), and
a mix of predicted tags unlike the training corpus's. The learner records
the corpus's tag counts in each version's signed metadata (`TAG_COUNTS_KEY`);
replicas count both signals per request (inference_service/drift.py) and
Prometheus compares them over time windows (observability/alerts.yml).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

TAG_COUNTS_KEY = "training_tag_counts"
"""Metadata field: {tag: training titles carrying it}; absent in versions from before drift."""


def tag_counts(tags: Iterable[Sequence[str]]) -> dict[str, int]:
    """Titles per tag over a corpus's tag lists, sorted by tag (stable, signable JSON)."""
    counts = Counter(tag for row in tags for tag in set(row))
    return dict(sorted(counts.items()))


def tag_shares(metadata: Mapping[str, Any]) -> dict[str, float]:
    """Each tag's share of all tag assignments in the training corpus, from a version's
    metadata; {} when the version has no (or malformed) counts, so drift of the tag mix
    is simply not reported for it."""
    counts = metadata.get(TAG_COUNTS_KEY)
    if not isinstance(counts, dict):
        return {}
    valid = {
        tag: count
        for tag, count in counts.items()
        if isinstance(tag, str) and isinstance(count, int) and not isinstance(count, bool)
        if count > 0
    }
    total = sum(valid.values())
    return {tag: count / total for tag, count in valid.items()} if total else {}


def unknown_words(words: Iterable[str], vocabulary: Container[str]) -> int:
    """How many of `words` the vocabulary lacks: one hash lookup per word."""
    return sum(1 for word in words if word not in vocabulary)
