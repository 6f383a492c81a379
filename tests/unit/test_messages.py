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
    "annotator": "anon:0123abcd",
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
        (b'{"title": "x", "n": ' + b"1" * 4301 + b"}", {"schema": FEEDBACK_SCHEMA}, "number_too_large"),
        (b'{"title": "How do I \\ud800 parse", "tags": ["python"]}', {"schema": FEEDBACK_SCHEMA}, "invalid_unicode"),
        (json.dumps({**GOOD, "title": "\u0000\u0000"}).encode(), {"schema": FEEDBACK_SCHEMA}, "empty_title"),
        (json.dumps({**GOOD, "model_version": "v" * 1_000}).encode(), {"schema": FEEDBACK_SCHEMA}, "bad_model_version"),
        (json.dumps({**GOOD, "annotator": "a b"}).encode(), {"schema": FEEDBACK_SCHEMA}, "bad_annotator"),
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


# Issue 11, reproductions 1, 2 and 6: whatever the learner would refuse, the contract refuses
# (the HTTP edge calls the same function, so these are 422s before the 202).
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"title": "\u0000\u0000"}, "empty_title"),
        ({"title": "\u007f"}, "empty_title"),
        ({"title": "\u200b\u200b \ufeff"}, "empty_title"),  # zero-width and BOM: invisible
        ({"title": "How do I \ud800 parse"}, "invalid_unicode"),
        ({"title": "\udfff"}, "invalid_unicode"),
        ({"model_version": "v" * 1_000_000}, "bad_model_version"),
        ({"model_version": "v1\u0000"}, "bad_model_version"),
        ({"model_version": "v1\n"}, "bad_model_version"),
        ({"feedback_id": "id\u0007"}, "bad_feedback_id"),
        ({"feedback_id": "x" * 101}, "bad_feedback_id"),
        ({"feedback_id": "\ud800"}, "bad_feedback_id"),
        ({"annotator": "anon:\u0000"}, "bad_annotator"),
        ({"annotator": 5}, "wrong_type"),
        ({"submitted_at": "2026-01-01T00:00:00Z" + " " * 100}, "bad_timestamp"),
    ],
)
def test_the_contract_refuses_what_the_store_could_not_keep(change, reason):
    with pytest.raises(InvalidMessage) as error:
        Feedback.from_dict({**GOOD, **change})
    assert error.value.reason == reason


def test_titles_are_normalised_to_one_line_of_visible_text():
    feedback = Feedback.from_dict({**GOOD, "title": "  a\u0000b\r\n\tc   d \u007f"})
    assert feedback.title == "a b c d"
    assert Feedback.from_dict({**GOOD, "model_version": ""}).model_version is None
