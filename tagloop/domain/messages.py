"""Pub/Sub payloads (contracts §3): building, serialising, parsing and validating.

`Feedback.from_dict` is the one correction contract: the HTTP edge calls it
before answering 202 and the learner calls it before storing, so anything the
learner would refuse is a 422 at the edge, with the same `reason`. It
normalises what it accepts (a title is one line of visible text, identifiers
are printable and bounded), which is what lets the learner's CSV read back
every accepted correction exactly.

Readers must never crash on a bad message: `parse_*` raise `InvalidMessage`
with a short machine-readable `reason`, which consumers log, count and ack.
Unknown fields are ignored, so writers can extend payloads compatibly.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tagloop.domain import strict_json
from tagloop.domain.tags import InvalidTag, normalize_tags
from tagloop.domain.versions import InvalidVersion, check_version

FEEDBACK_SCHEMA = "tagloop.feedback.v1"
MODEL_UPDATE_SCHEMA = "tagloop.domain.model-update.v1"
STAGE_CHANGE_SCHEMA = "tagloop.domain.stage-change.v1"

MAX_TITLE_LENGTH = 300
MAX_TAGS = 10
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ID_LENGTH = 100
"""feedback_id and model_version: a UUID or a version id is far shorter."""
MAX_ANNOTATOR_LENGTH = 128
MAX_TIMESTAMP_LENGTH = 40


class InvalidMessage(ValueError):
    """A payload that fails validation; `reason` is a stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def utc_now() -> str:
    """RFC 3339 timestamp in UTC with millisecond precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_timestamp(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessage("wrong_type", f"{name} must be an RFC 3339 string")
    if len(value) > MAX_TIMESTAMP_LENGTH or not (value.isascii() and value.isprintable()):
        raise InvalidMessage("bad_timestamp", f"{name} is not an RFC 3339 timestamp")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidMessage("bad_timestamp", f"{name} is not an RFC 3339 timestamp") from None
    return value


def _visible(char: str) -> bool:
    """Letters, marks, numbers, punctuation, symbols: not control, format, surrogate or space."""
    return unicodedata.category(char)[0] not in "CZ"


def one_line(text: str) -> str:
    """Control characters become spaces and whitespace runs collapse: a title is one line."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return " ".join(cleaned.split())


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_title(title: object) -> str:
    """Normalise and bound a question title; shared by the HTTP API and the learner.

    The result is one line (control characters folded to spaces, whitespace
    collapsed) with at least one visible character: "\\u0000\\u0000" or a
    zero-width space alone is an empty title, not a row the store cannot read.
    """
    if not isinstance(title, str):
        raise InvalidMessage("wrong_type", "title must be a string")
    if _has_surrogate(title):
        raise InvalidMessage("invalid_unicode", "title holds a lone UTF-16 surrogate")
    title = one_line(title)
    if not any(_visible(char) for char in title):
        raise InvalidMessage("empty_title", "title has no visible characters")
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidMessage(
            "title_too_long", f"title is longer than {MAX_TITLE_LENGTH} characters"
        )
    return title


def validate_identifier(value: Any, name: str, reason: str, max_length: int) -> str:
    """A string of 1-`max_length` visible characters (no spaces, controls or surrogates)."""
    if not isinstance(value, str):
        raise InvalidMessage("wrong_type", f"{name} must be a string")
    if not 1 <= len(value) <= max_length or not all(_visible(char) for char in value):
        raise InvalidMessage(
            reason, f"{name} must be 1-{max_length} visible characters without spaces"
        )
    return value


def validate_tags(tags: Any, name: str = "tags", allow_empty: bool = False) -> list[str]:
    """Normalise a tag list; at most MAX_TAGS, at least one unless `allow_empty`."""
    if not isinstance(tags, list):
        raise InvalidMessage("wrong_type", f"{name} must be a list of strings")
    try:
        normalized = normalize_tags(tags)
    except InvalidTag as error:
        raise InvalidMessage("invalid_tag", str(error)) from None
    if not normalized and not allow_empty:
        raise InvalidMessage("no_tags", f"{name} is empty")
    if len(normalized) > MAX_TAGS:
        raise InvalidMessage("too_many_tags", f"{name} has more than {MAX_TAGS} tags")
    return normalized


def _load_json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidMessage("too_large", f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        payload = strict_json.loads(data)
    except strict_json.JsonError as error:
        reason = "not_json" if error.code == "malformed_json" else error.code
        raise InvalidMessage(
            reason, f"payload is not representable JSON ({error.detail})"
        ) from None
    if not isinstance(payload, dict):
        raise InvalidMessage("wrong_type", "payload must be a JSON object")
    return payload


def _check_schema(attributes: dict[str, str] | None, expected: str) -> None:
    schema = (attributes or {}).get("schema")
    if schema != expected:
        raise InvalidMessage("unknown_schema", f"schema attribute is {schema!r}, want {expected!r}")


def _feedback_id(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidMessage("bad_feedback_id", "feedback_id must be a string")
    return validate_identifier(value, "feedback_id", "bad_feedback_id", MAX_ID_LENGTH)


@dataclass(frozen=True)
class Feedback:
    """A user's correction of a prediction."""

    title: str
    tags: list[str]
    predicted_tags: list[str] = field(default_factory=list)
    model_version: str | None = None
    feedback_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    submitted_at: str = field(default_factory=utc_now)
    annotator: str | None = None
    """Who corrected: "anon:<id>" (UI cookie), "user:<identity>" (trusted proxy header),
    "addr:<hash>" (client address); None in messages from before annotators existed."""

    schema = FEEDBACK_SCHEMA

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Feedback:
        """The correction contract: validate and normalise (HTTP body or message payload)."""
        feedback_id = payload.get("feedback_id")
        model_version = payload.get("model_version")
        annotator = payload.get("annotator")
        predicted = payload.get("predicted_tags")
        submitted_at = payload.get("submitted_at")
        return cls(
            title=validate_title(payload.get("title")),
            tags=validate_tags(payload.get("tags")),
            predicted_tags=[]
            if predicted is None
            else validate_tags(predicted, "predicted_tags", allow_empty=True),
            model_version=None
            if model_version is None or model_version == ""
            else validate_identifier(
                model_version, "model_version", "bad_model_version", MAX_ID_LENGTH
            ),
            feedback_id=str(uuid.uuid4()) if feedback_id is None else _feedback_id(feedback_id),
            submitted_at=utc_now()
            if submitted_at is None
            else _check_timestamp(submitted_at, "submitted_at"),
            annotator=None
            if annotator is None
            else validate_identifier(annotator, "annotator", "bad_annotator", MAX_ANNOTATOR_LENGTH),
        )

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        return json.dumps(asdict(self)).encode(), {"schema": FEEDBACK_SCHEMA}


@dataclass(frozen=True)
class ModelUpdate:
    """The broadcast that a new model version was promoted."""

    version: str
    artifact_uri: str
    sha256: str
    created_at: str
    metrics: dict[str, float] = field(default_factory=dict)

    schema = MODEL_UPDATE_SCHEMA

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ModelUpdate:
        for name in ("version", "artifact_uri", "sha256"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise InvalidMessage("missing_field", f"{name} must be a non-empty string")
        try:
            check_version(payload["version"])
        except InvalidVersion as error:
            raise InvalidMessage("invalid_version", str(error)) from None
        sha = payload["sha256"]
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise InvalidMessage("bad_sha256", "sha256 must be 64 lower-case hex digits")
        metrics = payload.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()
        ):
            raise InvalidMessage("wrong_type", "metrics must map names to numbers")
        return cls(
            version=payload["version"],
            artifact_uri=payload["artifact_uri"],
            sha256=sha,
            created_at=_check_timestamp(payload.get("created_at"), "created_at"),
            metrics={str(k): float(v) for k, v in metrics.items()},
        )

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        return json.dumps(asdict(self)).encode(), {"schema": MODEL_UPDATE_SCHEMA}


@dataclass(frozen=True)
class StageChange:
    """The broadcast that a candidate's rollout stage changed (a hint: replicas then read
    the signed models/rollout.json, which is what they follow)."""

    version: str
    stage: str
    issued_at: str

    schema = STAGE_CHANGE_SCHEMA

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> StageChange:
        try:
            version = check_version(payload.get("version"))
        except InvalidVersion as error:
            raise InvalidMessage("invalid_version", str(error)) from None
        stage = payload.get("stage")
        if not isinstance(stage, str) or stage not in STAGES:
            raise InvalidMessage("bad_stage", f"stage must be one of {', '.join(STAGES)}")
        return cls(version, stage, _check_timestamp(payload.get("issued_at"), "issued_at"))

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        return json.dumps(asdict(self)).encode(), {"schema": STAGE_CHANGE_SCHEMA}


STAGES = ("shadow", "canary", "full", "rolled_back")
"""tagloop.domain.rollout.Stage's values (that module builds on this one)."""


def parse_feedback(data: bytes, attributes: dict[str, str] | None) -> Feedback:
    _check_schema(attributes, FEEDBACK_SCHEMA)
    return Feedback.from_dict(_load_json(data))


def parse_model_update(data: bytes, attributes: dict[str, str] | None) -> ModelUpdate:
    _check_schema(attributes, MODEL_UPDATE_SCHEMA)
    return ModelUpdate.from_dict(_load_json(data))


def parse_model_message(
    data: bytes, attributes: dict[str, str] | None
) -> ModelUpdate | StageChange:
    """Either message of the model topic, told apart by the schema attribute."""
    if (attributes or {}).get("schema") == STAGE_CHANGE_SCHEMA:
        return StageChange.from_dict(_load_json(data))
    return parse_model_update(data, attributes)
