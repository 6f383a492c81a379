"""feedback.csv: durable appends, dedupe across restarts, torn-tail repair, refusal of damage."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from learning_service.store import HEADER, FeedbackStore, StoredFeedback, StoreError
from tagloop.domain.messages import Feedback, InvalidMessage
from tests.fixtures.learning import file_size_limit


def row(i: int, title: str = "How do I parse JSON in Python?") -> StoredFeedback:
    feedback = Feedback(
        title=f"{title} #{i}",
        tags=["python", "json"],
        predicted_tags=["python"],
        model_version="v1",
        feedback_id=f"id-{i}",
        submitted_at="2026-01-01T00:00:00.000Z",
    )
    return StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:00.000Z")


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return tmp_path / "learner" / "feedback.csv"


def test_rows_round_trip_through_a_csv_any_reader_can_parse(csv_path: Path):
    tricky = Feedback(
        title='Quotes "here", commas, and a\nnewline\ttab',
        tags=["c#", "regex"],
        feedback_id="f-1",
        model_version=None,
    )
    store = FeedbackStore(csv_path)
    assert store.append([StoredFeedback.from_feedback(tricky, "2026-01-01T00:00:00Z")]) != []
    store.close()

    with csv_path.open(newline="", encoding="utf-8") as handle:
        [record] = list(csv.DictReader(handle))
    assert record["feedback_id"] == "f-1"
    assert record["title"] == 'Quotes "here", commas, and a newline tab'  # one line per record
    assert record["tags"] == '["c#", "regex"]'
    assert record["model_version"] == ""
    assert len(csv_path.read_bytes().splitlines()) == 2

    reopened = FeedbackStore(csv_path)
    assert reopened.rows()[0].tags == ["c#", "regex"]
    assert reopened.rows()[0].model_version is None
    reopened.close()


def test_duplicates_are_dropped_within_a_batch_and_across_restarts(csv_path: Path):
    store = FeedbackStore(csv_path)
    assert [r.feedback_id for r in store.append([row(1), row(2), row(1)])] == ["id-1", "id-2"]
    store.close()

    store = FeedbackStore(csv_path)
    assert "id-1" in store and len(store) == 2
    assert [r.feedback_id for r in store.append([row(2), row(3)])] == ["id-3"]
    assert [r.feedback_id for r in store.rows()] == ["id-1", "id-2", "id-3"]
    assert [r.feedback_id for r in store.rows(2)] == ["id-1", "id-2"]
    store.close()


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_a_torn_last_line_is_truncated_and_its_message_stored_again(
    csv_path: Path, cut: int, caplog: pytest.LogCaptureFixture
):
    store = FeedbackStore(csv_path)
    store.append([row(1), row(2)])
    store.close()
    intact = csv_path.read_bytes()
    torn = row(3).to_line()[:cut]  # a crash in the middle of the next append
    csv_path.write_bytes(intact + torn)

    store = FeedbackStore(csv_path)
    assert "torn tail" in caplog.text
    assert csv_path.read_bytes() == intact
    assert "id-3" not in store
    store.append([row(3)])  # the unacked message is redelivered
    store.close()
    assert csv_path.read_bytes() == intact + row(3).to_line()


def test_a_garbled_last_line_is_repaired_like_a_torn_one(csv_path: Path):
    store = FeedbackStore(csv_path)
    store.append([row(1)])
    store.close()
    intact = csv_path.read_bytes()
    csv_path.write_bytes(intact + b"\0\0\0\0\n")  # e.g. a power cut after the size was updated
    FeedbackStore(csv_path).close()
    assert csv_path.read_bytes() == intact


def test_a_torn_header_is_rewritten(csv_path: Path):
    csv_path.parent.mkdir(parents=True)
    csv_path.write_bytes(HEADER[:7])
    FeedbackStore(csv_path).close()
    assert csv_path.read_bytes() == HEADER


def test_damage_in_the_middle_is_refused_not_silently_dropped(csv_path: Path):
    store = FeedbackStore(csv_path)
    store.append([row(1), row(2)])
    store.close()
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(lines[0] + b"garbage\n" + lines[2])
    with pytest.raises(StoreError, match="malformed line"):
        FeedbackStore(csv_path)


def test_a_foreign_file_is_refused(csv_path: Path):
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("title,tags\nx,y\n")
    with pytest.raises(StoreError, match="not a tagloop feedback file"):
        FeedbackStore(csv_path)


def test_only_one_store_may_write_a_data_directory(csv_path: Path):
    store = FeedbackStore(csv_path)
    with pytest.raises(StoreError, match="another learner"):
        FeedbackStore(csv_path)
    store.close()
    FeedbackStore(csv_path).close()


def test_a_failed_write_leaves_no_partial_row(csv_path: Path):
    """A real write error (the file size limit, EFBIG) mid-batch: the file is rolled back."""
    store = FeedbackStore(csv_path)
    store.append([row(1)])
    before = csv_path.read_bytes()
    with file_size_limit(len(before) + 50), pytest.raises(OSError):
        store.append([row(i) for i in range(2, 50)])
    assert csv_path.read_bytes() == before
    assert len(store) == 1 and "id-2" not in store
    assert [r.feedback_id for r in store.append([row(2)])] == ["id-2"]
    store.close()
    reopened = FeedbackStore(csv_path)
    assert len(reopened) == 2
    reopened.close()


def test_identifiers_that_cannot_be_one_line_are_invalid_messages():
    with pytest.raises(InvalidMessage) as error:
        StoredFeedback.from_feedback(
            Feedback(title="t", tags=["java"], feedback_id="a\nb"), "2026-01-01T00:00:00Z"
        )
    assert error.value.reason == "bad_feedback_id"
