"""`tagloop export`: the store's readable rows, in its own layout, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from learning_service.export import ExportError, export
from learning_service.store import HEADER, FeedbackStore, StoredFeedback
from tagloop.cli import main
from tagloop.domain.messages import Feedback


def stored(i: int) -> StoredFeedback:
    feedback = Feedback.from_dict(
        {"title": f"Title {i}", "tags": ["python"], "feedback_id": f"id-{i}", "annotator": "anon:a"}
    )
    return StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:00.000Z")


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
    with pytest.raises(ExportError, match="CSV"):
        export(tmp_path / "feedback.csv", tmp_path / "out.parquet")
    (tmp_path / "feedback.csv").write_text("a,b\n")
    with pytest.raises(ExportError, match="not a tagloop feedback file"):
        export(tmp_path / "feedback.csv", tmp_path / "out.csv")
