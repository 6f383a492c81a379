"""The reject log is bounded: entries are capped and the file rotates, so no publisher can
fill the learner's disk with rejected messages (issue 11, reproduction 6)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from tagloop.channels.bus import REJECT_DATA_BYTES, Received, RejectLog, parse_or_reject
from tagloop.domain.messages import FEEDBACK_SCHEMA, parse_feedback


def received(data: bytes, number: int = 0, **attributes: str) -> Received:
    return Received(
        ack_id=f"ack-{number}",
        message_id=f"m-{number}",
        data=data,
        attributes={"schema": FEEDBACK_SCHEMA, **attributes},
        publish_time=datetime(2026, 1, 1, tzinfo=UTC),
        delivery_attempt=1,
    )


def test_a_megabyte_payload_costs_a_bounded_entry(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    rejects = RejectLog(path)
    data = b'{"model_version": "' + b"v" * 1_000_000 + b'"}'
    assert parse_or_reject(received(data), parse_feedback, rejects) == (None, "too_large")
    [entry] = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.stat().st_size < 2 * REJECT_DATA_BYTES
    assert entry["data_bytes"] == len(data) and entry["data_truncated"] is True
    assert base64.b64decode(entry["data_base64"]) == data[:REJECT_DATA_BYTES]


def test_the_log_rotates_and_keeps_at_most_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    rejects = RejectLog(path, max_bytes=200_000, backups=2)
    big = b"x" * 60_000  # not JSON: rejected, about 81 kB per entry
    for number in range(20):
        parse_or_reject(received(big, number), parse_feedback, rejects)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rejects.jsonl", "rejects.jsonl.1", "rejects.jsonl.2"]
    assert all((tmp_path / name).stat().st_size <= 200_000 for name in files)
    newest = [json.loads(line)["message_id"] for line in path.read_text().splitlines()]
    assert newest[-1] == "m-19"
    # A restarted learner continues the same file and still respects the cap.
    again = RejectLog(path, max_bytes=200_000, backups=2)
    parse_or_reject(received(big, 20), parse_feedback, again)
    assert path.stat().st_size <= 200_000


def test_a_parser_crash_rejects_that_message_only(tmp_path: Path) -> None:
    def fragile(data: bytes, attributes: dict[str, str]) -> bytes:
        if data == b"boom":
            raise KeyError("a bug, not a validation error")
        return data

    rejects = RejectLog(tmp_path / "rejects.jsonl")
    assert parse_or_reject(received(b"boom"), fragile, rejects) == (None, "unparseable")
    assert parse_or_reject(received(b"fine"), fragile, rejects) == (b"fine", None)
