"""The training window: a refit's rows are bounded, corrections first, a fixed bootstrap sample."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from learning_service.config import DEFAULT_TRAINING_WINDOW, LearnerSettings
from learning_service.store import StoredFeedback
from learning_service.training import Corpus, training_corpus, within_window
from tagloop.domain.messages import Feedback
from tagloop.settings import ConfigError


def numbered(prefix: str, count: int) -> Corpus:
    return Corpus([f"{prefix} title {i}" for i in range(count)], [[prefix]] * count)


def stored(title: str, tags: list[str]) -> StoredFeedback:
    return StoredFeedback.from_feedback(Feedback(title=title, tags=tags), "2026-01-01T00:00:00Z")


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    remaining = iter(whole)
    return all(item in remaining for item in part)


sizes = st.integers(min_value=0, max_value=120)


@given(bootstrap_rows=sizes, correction_rows=sizes, window=st.integers(1, 150))
def test_the_window_keeps_the_newest_corrections_then_a_bootstrap_sample(
    bootstrap_rows: int, correction_rows: int, window: int
) -> None:
    bootstrap, corrections = numbered("boot", bootstrap_rows), numbered("fix", correction_rows)
    train = within_window(bootstrap, corrections, window)
    if bootstrap_rows + correction_rows <= window:
        assert train == Corpus(
            bootstrap.titles + corrections.titles, bootstrap.tags + corrections.tags
        )
        return
    assert len(train) == window
    kept = [title for title in train.titles if title.startswith("fix")]
    assert kept == corrections.titles[len(corrections) - len(kept) :], "the newest, in order"
    assert len(kept) == min(correction_rows, window), "corrections come before the bootstrap"
    sample = train.titles[: len(train) - len(kept)]
    assert is_subsequence(sample, bootstrap.titles), "bootstrap rows in their own order"
    assert within_window(bootstrap, corrections, window) == train, "deterministic"


@given(small=st.integers(0, 80), extra=st.integers(0, 80))
def test_a_smaller_bootstrap_fill_is_a_subset_of_a_larger_one(small: int, extra: int) -> None:
    """Successive refits (more corrections, less room) keep training on the same bootstrap rows."""
    bootstrap = numbered("boot", 100)
    larger = within_window(bootstrap, Corpus([], []), small + extra)
    smaller = within_window(bootstrap, Corpus([], []), small)
    assert set(smaller.titles) <= set(larger.titles)


def test_no_window_or_a_corpus_within_it_trains_exactly_as_before() -> None:
    bootstrap = numbered("boot", 50)
    rows = [stored(f"fix title {i}", ["boot"]) for i in range(10)]
    unbounded = training_corpus(bootstrap, rows, min_support=3)
    assert training_corpus(bootstrap, rows, min_support=3, window=60) == unbounded
    assert unbounded.train.titles == bootstrap.titles + [row.title for row in rows]


def test_a_recorrected_title_counts_as_newest_and_the_new_tag_slice_is_kept() -> None:
    bootstrap = numbered("boot", 50)
    rows = [stored(f"fix title {i}", ["boot"]) for i in range(10)]
    rows.append(stored("FIX title 0", ["boot", "list"]))  # re-corrected last: the newest
    rows += [stored(f"Ownership question number {i}", ["rust"]) for i in range(40)]
    unbounded = training_corpus(bootstrap, rows, min_support=3)
    data = training_corpus(bootstrap, rows, min_support=3, window=len(unbounded.train) - 20)
    assert len(data.new_tag_slice) > 0 and data.new_tag_slice == unbounded.new_tag_slice
    assert data.held_back == unbounded.held_back == {"list": 1}
    corrections = [t for t in data.train.titles if not t.startswith("boot")]
    assert "FIX title 0" in corrections and "fix title 0" not in data.train.titles
    assert len(corrections) == len(unbounded.train) - 50, "every correction fits"
    assert len(data.train) == len(unbounded.train) - 20


def test_the_window_setting() -> None:
    def window(value: str | None) -> int | None:
        env = {} if value is None else {"TAGLOOP_TRAINING_WINDOW": value}
        return LearnerSettings.from_env(env).training_window

    assert window(None) == DEFAULT_TRAINING_WINDOW
    assert window("0") is None
    assert window("50000") == 50_000
    for bad in ("999", "-1", "many"):
        with pytest.raises(ConfigError):
            window(bad)
