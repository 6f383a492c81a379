"""`tagloop export`: the store's readable rows, in its own layout, written atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from learning_service.export import ExportError, export
from learning_service.store import FIELDS, HEADER, FeedbackStore, StoredFeedback
from tagloop.cli import main
from tagloop.domain.messages import Feedback
from tagloop.replay import ReplayError, corrections


def stored(
    i: int, title: str | None = None, tags: list[str] | None = None, annotator: str = "anon:a"
) -> StoredFeedback:
    feedback = Feedback.from_dict(
        {
            "title": title or f"Title {i}",
            "tags": tags or ["python"],
            "feedback_id": f"id-{i}",
            "annotator": annotator,
            "model_version": "20261122T051500123Z-1a2b3c" if i % 2 else None,
            "submitted_at": "2026-01-01T00:00:00.250Z",
        }
    )
    return StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:01.500Z")


def store_with(tmp_path: Path, rows: list[StoredFeedback]) -> Path:
    store = FeedbackStore(tmp_path / "learner" / "feedback.csv")
    store.append(rows)
    store.close()
    return store.path


def test_export_writes_every_readable_row_and_skips_a_torn_tail(tmp_path: Path) -> None:
    store_csv = tmp_path / "learner" / "feedback.csv"
    rows = [stored(i) for i in range(3)]
    store = FeedbackStore(store_csv)
    store.append(rows[:2])
    store.close()
    with store_csv.open("ab") as handle:
        handle.write(rows[2].to_line()[:10])  # a write in progress
    out = tmp_path / "export.csv"
    assert main(["export", "--data-dir", str(store_csv.parent), "--out", str(out)]) == 0
    assert out.read_bytes() == HEADER + rows[0].to_line() + rows[1].to_line()


def test_export_refuses_other_formats_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"\*\.csv or \*\.parquet"):
        export(tmp_path / "feedback.csv", tmp_path / "out.json")
    (tmp_path / "feedback.csv").write_text("a,b\n")
    with pytest.raises(ExportError, match="not a tagloop feedback file"):
        export(tmp_path / "feedback.csv", tmp_path / "out.csv")


def test_a_parquet_export_has_typed_columns_and_replays_the_same_bodies(tmp_path: Path) -> None:
    rows = [stored(i, tags=["python", "pandas"]) for i in range(3)]
    store_csv = store_with(tmp_path, rows)
    parquet, csv_file = tmp_path / "out.parquet", tmp_path / "out.csv"
    assert export(store_csv, parquet) == export(store_csv, csv_file) == 3
    table = pq.read_table(parquet)
    assert table.column_names == list(FIELDS)
    assert str(table.schema.field("tags").type) == "list<element: string>"
    assert str(table.schema.field("received_at").type) == "timestamp[ms, tz=UTC]"
    first = table.to_pylist()[0]
    assert first["tags"] == ["python", "pandas"] and first["annotator"] == "anon:a"
    assert first["model_version"] is None
    assert first["received_at"] == datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert list(corrections(parquet)) == list(corrections(csv_file))
    assert [body["feedback_id"] for body in corrections(parquet)] == ["id-0", "id-1", "id-2"]


def test_validated_only_keeps_the_agreeing_corrections(tmp_path: Path) -> None:
    rows = [
        stored(1, "Agreed title", ["python"], "anon:a"),
        stored(2, "agreed  TITLE", ["python"], "anon:b"),
        stored(3, "Agreed title", ["java"], "anon:c"),  # the dissent is not exported
        stored(4, "Only one annotator", ["python"], "anon:a"),
    ]
    out = tmp_path / "validated.parquet"
    assert (
        main(
            [
                "export",
                "--data-dir",
                str(store_with(tmp_path, rows).parent),
                "--out",
                str(out),
                "--validated-only",
            ]
        )
        == 0
    )
    assert pq.read_table(out).column("feedback_id").to_pylist() == ["id-1", "id-2"]


def test_replay_refuses_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.parquet"
    bogus.write_bytes(b"not parquet")
    with pytest.raises(ReplayError, match="not a tagloop export"):
        list(corrections(bogus))
