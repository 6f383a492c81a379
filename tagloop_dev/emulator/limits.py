"""The service's validation limits, and the policies derived from a subscription's config.

Everything a create/update request is checked against lives here, so the
broker only ever holds valid configs: resource names (INVALID_ARGUMENT, never
NOT_FOUND, for a malformed one), message size, retention and expiration
ranges, dead-letter and retry policies, filters, and the features this
emulator does not implement (refused with UNIMPLEMENTED, naming the feature,
rather than accepted and ignored).

`Limits.short_durations` (the `--short-durations` flag, off by default) lets
tests use seconds-long expiration TTLs and retention, which the service
refuses; everything else is the service's range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.duration_pb2 import Duration

from tagloop_dev.emulator.filters import FilterError, Predicate, compile_filter

# google.pubsub_v1 builds its protobuf classes at runtime and ships no type stubs
# for them: `Pb` annotates a raw protobuf message (Topic, Subscription, ...).
Pb: TypeAlias = Any

DAY = 24 * 3600
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_ATTRIBUTES, MAX_KEY_BYTES, MAX_VALUE_BYTES = 100, 256, 1024
MIN_RETENTION, MAX_SUBSCRIPTION_RETENTION, MAX_TOPIC_RETENTION = 600, 7 * DAY, 31 * DAY
MIN_EXPIRATION = DAY
MIN_DELIVERY_ATTEMPTS, MAX_DELIVERY_ATTEMPTS, DEFAULT_DELIVERY_ATTEMPTS = 5, 100, 5
MAX_BACKOFF_SECONDS = 600
DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF = 10.0, 600.0
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 10, 600

_RESOURCE = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_PROJECT = r"projects/[^/]+"
NAME_PATTERNS = {
    "project": re.compile(_PROJECT),
    "topic": re.compile(rf"{_PROJECT}/topics/{_RESOURCE}"),
    "subscription": re.compile(rf"{_PROJECT}/subscriptions/{_RESOURCE}"),
    "snapshot": re.compile(rf"{_PROJECT}/snapshots/{_RESOURCE}"),
}


class BrokerError(Exception):
    """A request the broker refuses; `code` is the gRPC status the client must see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> BrokerError:
    return BrokerError(grpc.StatusCode.INVALID_ARGUMENT, message)


def unimplemented(feature: str) -> BrokerError:
    return BrokerError(
        grpc.StatusCode.UNIMPLEMENTED, f"{feature} is not implemented by this emulator"
    )


def check_name(name: str, kind: str) -> str:
    """`name` if it is a well-formed resource name of `kind`, else INVALID_ARGUMENT."""
    if not NAME_PATTERNS[kind].fullmatch(name) or name.rsplit("/", 1)[-1].startswith("goog"):
        raise invalid(f"Invalid {kind} name: {name!r}")
    return name


def seconds(duration: Duration) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def ttl(pb: Pb) -> float | None:
    """The subscription's expiration TTL in seconds; None: it never expires."""
    if not pb.HasField("expiration_policy") or not pb.expiration_policy.HasField("ttl"):
        return None
    return seconds(pb.expiration_policy.ttl)


def check_ack_deadline(value: int) -> int:
    """A subscription's or stream's ack deadline, in the range Pub/Sub accepts."""
    if not MIN_ACK_DEADLINE <= value <= MAX_ACK_DEADLINE:
        raise invalid(f"ack deadlines must be between {MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE}s")
    return value


def check_message_size(size: int) -> None:
    if size > MAX_MESSAGE_BYTES:
        raise invalid(f"Message is too large: {size} bytes, the limit is {MAX_MESSAGE_BYTES}.")


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    max_attempts: int


@dataclass(frozen=True)
class Backoff:
    minimum: float
    maximum: float

    def delay(self, attempt: int) -> float:
        """Exponential: the minimum after the first failed attempt, doubling up to the maximum."""
        return min(self.maximum, self.minimum * 2.0 ** min(attempt - 1, 30))


@dataclass(frozen=True)
class Limits:
    """The ranges requests are held to; `short_durations` is the test-speed leniency."""

    short_durations: bool = False

    def check_retention(self, duration: Duration, maximum: int, what: str) -> None:
        value = seconds(duration)
        low = 0 if self.short_durations else MIN_RETENTION
        if value <= 0 or value < low or value > maximum:
            raise invalid(f"{what} must be between {low}s and {maximum}s, not {value}s")

    def check_expiration(self, pb: Pb) -> float | None:
        """The subscription's TTL in seconds, None when it never expires."""
        value = ttl(pb)
        if value is not None and (
            value <= 0 or (not self.short_durations and value < MIN_EXPIRATION)
        ):
            raise invalid(f"expiration_policy.ttl must be at least {MIN_EXPIRATION}s (or unset)")
        return value

    def check_topic(self, pb: Pb) -> None:
        if pb.HasField("message_retention_duration"):
            self.check_retention(
                pb.message_retention_duration, MAX_TOPIC_RETENTION, "topic message retention"
            )
        if pb.schema_settings.schema:
            raise unimplemented("Schemas (schema_settings)")
        if pb.kms_key_name:
            raise unimplemented("Customer-managed encryption (kms_key_name)")
        if pb.HasField("ingestion_data_source_settings"):
            raise unimplemented("Import topics (ingestion_data_source_settings)")
        if len(pb.message_transforms):
            raise unimplemented("Single message transforms (message_transforms)")


def check_subscription_features(pb: Pb) -> None:
    """Refuse, by name, what this emulator would otherwise silently ignore."""
    if pb.push_config.push_endpoint:
        raise unimplemented("Push delivery (push_config)")
    if pb.HasField("bigquery_config") and pb.bigquery_config.table:
        raise unimplemented("BigQuery subscriptions (bigquery_config)")
    if pb.HasField("cloud_storage_config") and pb.cloud_storage_config.bucket:
        raise unimplemented("Cloud Storage subscriptions (cloud_storage_config)")
    if len(pb.message_transforms):
        raise unimplemented("Single message transforms (message_transforms)")


def dead_letter(pb: Pb, topic_exists: bool) -> DeadLetter | None:
    """The validated dead-letter policy (0 attempts means the default of 5)."""
    if not pb.HasField("dead_letter_policy") or not pb.dead_letter_policy.dead_letter_topic:
        return None
    policy = pb.dead_letter_policy
    attempts = policy.max_delivery_attempts or DEFAULT_DELIVERY_ATTEMPTS
    if not MIN_DELIVERY_ATTEMPTS <= attempts <= MAX_DELIVERY_ATTEMPTS:
        raise BrokerError(  # OUT_OF_RANGE, as the official emulator answers
            grpc.StatusCode.OUT_OF_RANGE,
            f"max_delivery_attempts must be between {MIN_DELIVERY_ATTEMPTS} and "
            f"{MAX_DELIVERY_ATTEMPTS}, not {attempts}",
        )
    check_name(policy.dead_letter_topic, "topic")
    if not topic_exists:
        raise BrokerError(
            grpc.StatusCode.NOT_FOUND,
            f"Dead letter topic not found (resource={policy.dead_letter_topic}).",
        )
    return DeadLetter(policy.dead_letter_topic, attempts)


def backoff(pb: Pb) -> Backoff | None:
    """The validated retry policy; None: redeliver at once (the service's default)."""
    if not pb.HasField("retry_policy"):
        return None
    policy = pb.retry_policy
    low = seconds(policy.minimum_backoff) if policy.HasField("minimum_backoff") else None
    high = seconds(policy.maximum_backoff) if policy.HasField("maximum_backoff") else None
    low = DEFAULT_MIN_BACKOFF if low is None else low
    high = DEFAULT_MAX_BACKOFF if high is None else high
    for field, value in (("minimum_backoff", low), ("maximum_backoff", high)):
        if not 0 <= value <= MAX_BACKOFF_SECONDS:
            raise invalid(
                f"The value for {field} is out of bounds: {value}s is not between 0s "
                f"and {MAX_BACKOFF_SECONDS}s."
            )
    if low > high:
        raise invalid("retry_policy.minimum_backoff must not exceed maximum_backoff")
    return Backoff(low, high)


def subscription_filter(pb: Pb) -> Predicate | None:
    try:
        return compile_filter(pb.filter)
    except FilterError as error:
        raise invalid(f"Invalid filter {pb.filter!r}: {error}") from None
