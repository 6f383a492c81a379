"""Exactly-once delivery: accepted at create, acks answered per ack id (deviation 4)."""

from __future__ import annotations

import itertools
import queue
import threading

from google.cloud.pubsub_v1.subscriber import exceptions as sub_exceptions
from google.cloud.pubsub_v1.subscriber.message import Message

from tests.fixtures.conformance import Target


def test_exactly_once_acks_succeed_and_an_ack_of_a_nacked_delivery_fails(
    conformance: Target,
) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic, enable_exactly_once_delivery=True)
    assert conformance.subscriber.get_subscription(
        subscription=subscription
    ).enable_exactly_once_delivery
    conformance.publish(topic, b"once")
    outcomes: queue.Queue[tuple[int, str]] = queue.Queue()
    calls = itertools.count(1)
    late_ack_answered = threading.Event()

    def callback(message: Message) -> None:
        if next(calls) == 1:
            message.nack_with_response().result(timeout=30)
            try:
                message.ack_with_response().result(timeout=30)
                outcomes.put((1, "acked"))
            except sub_exceptions.AcknowledgeError as error:
                outcomes.put((1, error.error_code.name))
            late_ack_answered.set()
            return
        # Ack the redelivery only once the late ack was answered: acks sent together
        # share one response, and a failed ack id fails the whole response for the client.
        late_ack_answered.wait(30)
        message.ack_with_response().result(timeout=30)
        outcomes.put((2, "acked"))

    future = conformance.subscriber.subscribe(subscription, callback)
    try:
        first, second = sorted(outcomes.get(timeout=30) for _ in range(2))
    finally:
        future.cancel()
        future.result(timeout=30)
    assert first == (1, "INVALID_ACK_ID")
    assert second == (2, "acked")
    conformance.assert_quiet(subscription, 0.5)
