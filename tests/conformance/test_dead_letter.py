"""Dead-letter and retry policies (issue 15, deviations 1 and 2), on both emulators."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.subscriber.message import Message

from tests.fixtures.conformance import Target

MAX_ATTEMPTS = 5
MIN_BACKOFF, MAX_BACKOFF = 1, 2


def test_a_consumer_that_nacks_forever_ends_on_the_dead_letter_topic_with_backoff(
    conformance: Target,
) -> None:
    topic = conformance.make_topic()
    dead = conformance.make_topic("dead")
    inspect = conformance.make_subscription(dead, "inspect")
    subscription = conformance.make_subscription(
        topic,
        dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": MAX_ATTEMPTS},
        retry_policy={
            "minimum_backoff": timedelta(seconds=MIN_BACKOFF),
            "maximum_backoff": timedelta(seconds=MAX_BACKOFF),
        },
    )
    [message_id] = conformance.publish(topic, b"poison", origin="test")
    deliveries: list[tuple[float, int]] = []
    lock = threading.Lock()

    def nack_forever(message: Message) -> None:
        with lock:
            deliveries.append((time.monotonic(), message.delivery_attempt or 0))
        message.nack()

    future = conformance.subscriber.subscribe(subscription, nack_forever)
    try:
        [dead_lettered] = conformance.pull_count(inspect, 1, timeout=60)
    finally:
        future.cancel()
        future.result(timeout=30)
    assert [attempt for _, attempt in deliveries] == list(range(1, MAX_ATTEMPTS + 1))
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(deliveries)]
    # Backoff between attempts, not a hot loop. The official emulator redelivers the
    # first nack after ~0.3 s, then waits out the backoff; the project's emulator
    # waits minimum_backoff * 2^(attempt-1) every time.
    assert all(gap >= MIN_BACKOFF * 0.8 for gap in gaps[1:]), gaps
    message = dead_lettered.message
    assert message.data == b"poison"
    assert message.message_id != message_id  # a new message on the dead-letter topic
    source_publish_time = message.attributes["CloudPubSubDeadLetterSourceTopicPublishTime"]
    assert datetime.fromisoformat(source_publish_time.replace("Z", "+00:00")).tzinfo is not None
    assert dict(message.attributes) == {
        "origin": "test",
        "CloudPubSubDeadLetterSourceDeliveryCount": str(MAX_ATTEMPTS),
        "CloudPubSubDeadLetterSourceSubscription": "sub",
        "CloudPubSubDeadLetterSourceSubscriptionProject": conformance.project,
        "CloudPubSubDeadLetterSourceTopicPublishTime": source_publish_time,
    }
    conformance.assert_quiet(subscription, 0.5)  # gone from the source subscription


@pytest.mark.parametrize("attempts", [2, 4, 101])
def test_max_delivery_attempts_outside_5_to_100_is_refused(
    conformance: Target, attempts: int
) -> None:
    topic = conformance.make_topic()
    dead = conformance.make_topic("dead")
    with pytest.raises(gexc.OutOfRange, match="max_delivery_attempts"):
        conformance.make_subscription(
            topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": attempts}
        )


def test_dead_letter_policy_defaults_to_5_attempts_and_needs_an_existing_topic(
    conformance: Target,
) -> None:
    topic = conformance.make_topic()
    dead = conformance.make_topic("dead")
    name = conformance.make_subscription(topic, dead_letter_policy={"dead_letter_topic": dead})
    created = conformance.subscriber.get_subscription(subscription=name)
    assert created.dead_letter_policy.max_delivery_attempts == 5
    with pytest.raises(gexc.NotFound, match="Dead letter topic"):
        conformance.make_subscription(
            topic, "other", dead_letter_policy={"dead_letter_topic": conformance.topic("nope")}
        )


def test_delivery_attempt_counts_nacks_under_a_dead_letter_policy(conformance: Target) -> None:
    topic = conformance.make_topic()
    dead = conformance.make_topic("dead")
    subscription = conformance.make_subscription(
        topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5}
    )
    conformance.publish(topic, b"x")
    attempts = []
    for _ in range(3):
        [received] = conformance.pull_count(subscription, 1)
        attempts.append(received.delivery_attempt)
        conformance.subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"minimum_backoff": timedelta(seconds=601)}, "minimum_backoff"),
        ({"maximum_backoff": timedelta(seconds=700)}, "maximum_backoff"),
    ],
)
def test_retry_policy_backoffs_must_be_0_to_600_seconds(
    conformance: Target, policy: dict[str, timedelta], field: str
) -> None:
    topic = conformance.make_topic()
    with pytest.raises(gexc.InvalidArgument, match=field):
        conformance.make_subscription(topic, retry_policy=policy)


def test_retry_policy_holds_a_nacked_message_back(conformance: Target) -> None:
    """With a 1-2 s backoff a nacked message is not back at once (it hot-looped before)."""
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(
        topic,
        retry_policy={
            "minimum_backoff": timedelta(seconds=MIN_BACKOFF),
            "maximum_backoff": timedelta(seconds=MAX_BACKOFF),
        },
    )
    conformance.publish(topic, b"x")
    ack_ids = []
    for _ in range(2):  # the official emulator's first redelivery skips the backoff
        [received] = conformance.pull_count(subscription, 1)
        ack_ids.append(received.ack_id)
        nacked = time.monotonic()
        conformance.subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )
    conformance.assert_quiet(subscription, 0.5)
    [again] = conformance.pull_count(subscription, 1, timeout=15)
    assert again.message.data == b"x"
    assert time.monotonic() - nacked >= MIN_BACKOFF * 0.8
