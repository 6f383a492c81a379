"""Message payloads (contracts §3): every bad input is a reasoned InvalidMessage."""

import json

import pytest

from tagloop.domain.messages import (
    FEEDBACK_SCHEMA,
    MODEL_UPDATE_SCHEMA,
    Feedback,
    InvalidMessage,
    ModelUpdate,
    parse_feedback,
    parse_model_update,
)

GOOD = {
    "feedback_id": "f-1",
    "title": "  How to draw a stacked dotplot in R? ",
    "tags": ["R", "ggplot2", "r"],
    "predicted_tags": ["r"],
    "model_version": "v1",
    "submitted_at": "2026-11-22T05:00:00Z",
}


def test_feedback_round_trip_normalises_and_keeps_the_contract_fields():
    data, attributes = Feedback.from_dict(GOOD).to_message()
    assert attributes == {"schema": FEEDBACK_SCHEMA}
    payload = json.loads(data)
    assert payload == {
        **GOOD,
        "title": "How to draw a stacked dotplot in R?",
        "tags": ["r", "ggplot2"],
    }
    assert parse_feedback(data, attributes) == Feedback.from_dict(GOOD)


def test_feedback_defaults_id_and_timestamp_and_ignores_unknown_fields():
    feedback = Feedback.from_dict({"title": "t", "tags": ["python"], "extra": 1})
    assert len(feedback.feedback_id) == 36
    assert feedback.submitted_at.endswith("Z")
    assert feedback.predicted_tags == [] and feedback.model_version is None


@pytest.mark.parametrize(
    ("data", "attributes", "reason"),
    [
        (b"not json", {"schema": FEEDBACK_SCHEMA}, "not_json"),
        (b"\xff\xfe", {"schema": FEEDBACK_SCHEMA}, "not_json"),
        (b"[1, 2]", {"schema": FEEDBACK_SCHEMA}, "wrong_type"),
        (json.dumps({**GOOD, "title": 5}).encode(), {"schema": FEEDBACK_SCHEMA}, "wrong_type"),
        (json.dumps({**GOOD, "title": "   "}).encode(), {"schema": FEEDBACK_SCHEMA}, "empty_title"),
        (json.dumps({**GOOD, "title": "x" * 301}).encode(), {"schema": FEEDBACK_SCHEMA}, "title_too_long"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "title"}).encode(), {"schema": FEEDBACK_SCHEMA}, "wrong_type"),
        (json.dumps({**GOOD, "tags": []}).encode(), {"schema": FEEDBACK_SCHEMA}, "no_tags"),
        (json.dumps({**GOOD, "tags": "python"}).encode(), {"schema": FEEDBACK_SCHEMA}, "wrong_type"),
        (json.dumps({**GOOD, "tags": ["ok", "bad tag!"]}).encode(), {"schema": FEEDBACK_SCHEMA}, "invalid_tag"),
        (json.dumps({**GOOD, "tags": [f"t{i}" for i in range(11)]}).encode(), {"schema": FEEDBACK_SCHEMA}, "too_many_tags"),
        (json.dumps({**GOOD, "feedback_id": 7}).encode(), {"schema": FEEDBACK_SCHEMA}, "bad_feedback_id"),
        (json.dumps({**GOOD, "submitted_at": "yesterday"}).encode(), {"schema": FEEDBACK_SCHEMA}, "bad_timestamp"),
        (json.dumps({**GOOD, "model_version": 3}).encode(), {"schema": FEEDBACK_SCHEMA}, "wrong_type"),
        (json.dumps(GOOD).encode(), {"schema": "tagloop.feedback.v9"}, "unknown_schema"),
        (json.dumps(GOOD).encode(), {}, "unknown_schema"),
        (b"{" + b" " * 70_000 + b"}", {"schema": FEEDBACK_SCHEMA}, "too_large"),
    ],
)  # fmt: skip
def test_bad_feedback_payloads_are_rejected_with_a_reason(data, attributes, reason):
    with pytest.raises(InvalidMessage) as error:
        parse_feedback(data, attributes)
    assert error.value.reason == reason


def test_model_update_round_trip_and_validation():
    update = ModelUpdate(
        version="20261122T050000000Z-abc123",
        artifact_uri="s3://tagloop-models/models/20261122T050000000Z-abc123/model.npz",
        sha256="a" * 64,
        created_at="2026-11-22T05:00:00.000Z",
        metrics={"f1_macro": 0.55},
    )
    data, attributes = update.to_message()
    assert attributes == {"schema": MODEL_UPDATE_SCHEMA}
    assert parse_model_update(data, attributes) == update
    for bad, reason in [
        ({"sha256": "xyz"}, "bad_sha256"),
        ({"version": ""}, "missing_field"),
        ({"metrics": {"f1": "high"}}, "wrong_type"),
        ({"created_at": None}, "wrong_type"),
    ]:
        payload = {**json.loads(data), **bad}
        with pytest.raises(InvalidMessage) as error:
            parse_model_update(json.dumps(payload).encode(), attributes)
        assert error.value.reason == reason
