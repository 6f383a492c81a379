"""feedback.csv: durable appends, dedupe across restarts, torn-tail repair, quarantine of damage,
and the property that every accepted correction reads back."""

from __future__ import annotations

import base64
import csv
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from learning_service.store import (
    HEADER,
    LEGACY_HEADER,
    FeedbackStore,
    StoredFeedback,
    StoreError,
)
from tagloop.domain.messages import Feedback, InvalidMessage, parse_feedback
from tests.fixtures.learning import file_size_limit


def row(i: int, title: str = "How do I parse JSON in Python?") -> StoredFeedback:
    feedback = Feedback(
        title=f"{title} #{i}",
        tags=["python", "json"],
        predicted_tags=["python"],
        model_version="v1",
        feedback_id=f"id-{i}",
        submitted_at="2026-01-01T00:00:00.000Z",
        annotator="anon:a",
    )
    return StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:00.000Z")


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return tmp_path / "learner" / "feedback.csv"


def test_rows_round_trip_through_a_csv_any_reader_can_parse(csv_path: Path):
    tricky = Feedback.from_dict(
        {
            "title": 'Quotes "here", commas, and a\nnewline\ttab',
            "tags": ["c#", "regex"],
            "feedback_id": "f-1",
            "model_version": None,
        }
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


def test_damage_in_the_middle_is_quarantined_and_start_up_continues(csv_path: Path):
    store = FeedbackStore(csv_path)
    store.append([row(1), row(2), row(3)])
    store.close()
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(lines[0] + lines[1] + b"garbage\n" + lines[2] + b"\xff\xfe,x\n" + lines[3])

    store = FeedbackStore(csv_path)
    assert [r.feedback_id for r in store.rows()] == ["id-1", "id-2", "id-3"]
    assert store.quarantined == 2
    assert csv_path.read_bytes() == b"".join(lines)  # the file holds only readable rows again
    quarantined = [json.loads(line) for line in store.quarantine_path.read_text().splitlines()]
    assert [(q["line"], base64.b64decode(q["raw_base64"])) for q in quarantined] == [
        (3, b"garbage"),
        (5, b"\xff\xfe,x"),
    ]
    store.append([row(4)])
    store.close()
    assert FeedbackStore(csv_path).quarantined == 0


def test_a_file_from_before_the_annotator_column_is_migrated(csv_path: Path):
    csv_path.parent.mkdir(parents=True)
    csv_path.write_bytes(
        LEGACY_HEADER
        + b'id-1,A title,"[""python""]",[],v1,2026-01-01T00:00:00Z,2026-01-01T00:00:00Z\n'
    )
    store = FeedbackStore(csv_path)
    [legacy] = store.rows()
    assert (legacy.title, legacy.annotator) == ("A title", None)
    store.append([row(2)])
    store.close()
    with csv_path.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert [(r["feedback_id"], r["annotator"]) for r in records] == [
        ("id-1", ""),
        ("id-2", "anon:a"),
    ]


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


def test_a_row_that_would_not_read_back_is_refused_as_unstorable():
    """Defence in depth: a Feedback built around the contract (no validation) is refused."""
    for bad in (
        Feedback(title="t", tags=["java"], feedback_id="a\nb"),
        Feedback(title="", tags=["java"]),
        Feedback(title="lone \ud800", tags=["java"]),
    ):
        with pytest.raises(InvalidMessage) as error:
            StoredFeedback.from_feedback(bad, "2026-01-01T00:00:00Z")
        assert error.value.reason == "unstorable"


text = st.text(st.characters(blacklist_categories=()), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=5,
)
good_tags = st.lists(st.sampled_from(["python", " Java", "node js", "c#"]), min_size=1, max_size=3)
corrections = st.fixed_dictionaries(
    {"title": text, "tags": good_tags | st.lists(text, max_size=3)},
    optional={
        "predicted_tags": good_tags,
        "model_version": st.none() | text | json_values,
        "feedback_id": st.uuids().map(str) | text | json_values,
        "annotator": st.just("anon:0123abcd") | text,
        "submitted_at": st.just("2026-01-01T00:00:00Z") | text,
        "extra": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(corrections, min_size=1, max_size=20))
def test_every_accepted_correction_reads_back_after_a_restart(bodies: list[dict]):
    """Arbitrary unicode and JSON: what the contract accepts, the store stores and reads back."""
    accepted = []
    for body in bodies:
        try:
            feedback = Feedback.from_dict(body)
        except InvalidMessage:
            continue
        data, attributes = feedback.to_message()
        assert parse_feedback(data, attributes) == feedback  # and through Pub/Sub unchanged
        accepted.append(StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:00.000Z"))
    event(f"{bool(accepted)=}")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "feedback.csv"
        store = FeedbackStore(path)
        stored = store.append(accepted)
        store.close()
        reopened = FeedbackStore(path)
        assert reopened.rows() == stored
        assert reopened.quarantined == 0
        reopened.close()
