"""The project's emulator's delivery rules beyond what the official one shows (issue 15):
ordering keys held during a retry backoff."""

from __future__ import annotations

import time
from datetime import timedelta

from google.cloud import pubsub_v1

from tests.fixtures.pubsub import unique_project
from tests.fixtures.wait import wait_until

BACKOFF = 1.0


def test_a_backing_off_message_holds_back_its_key_and_only_its_key(pubsub_emulator: str) -> None:
    project = unique_project()
    ordering = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    publisher = pubsub_v1.PublisherClient(publisher_options=ordering)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic = publisher.create_topic(name=f"projects/{project}/topics/topic").name
        subscription = subscriber.create_subscription(
            request={
                "name": f"projects/{project}/subscriptions/sub",
                "topic": topic,
                "enable_message_ordering": True,
                "retry_policy": {
                    "minimum_backoff": timedelta(seconds=BACKOFF),
                    "maximum_backoff": timedelta(seconds=BACKOFF),
                },
            }
        ).name

        def publish(data: str, key: str) -> None:
            publisher.publish(topic, data.encode(), ordering_key=key).result(timeout=30)

        def pull(count: int) -> list[tuple[str, bytes]]:
            received: list[tuple[str, bytes]] = []

            def enough() -> bool:
                response = subscriber.pull(subscription=subscription, max_messages=10, timeout=2)
                received.extend((m.ack_id, m.message.data) for m in response.received_messages)
                return len(received) >= count

            wait_until(enough, timeout=15, what=f"{count} messages")
            return received

        for data in ("k1", "k2"):
            publish(data, "k")
        first = pull(2)
        assert [data for _, data in first] == [b"k1", b"k2"]
        subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[first[0][0]], ack_deadline_seconds=0
        )
        nacked = time.monotonic()
        publish("k3", "k")  # behind the backing-off k1
        publish("j1", "j")  # another key: not held
        assert [data for _, data in pull(1)] == [b"j1"]
        again = pull(3)
        assert time.monotonic() - nacked >= BACKOFF * 0.9
        assert [data for _, data in again] == [b"k1", b"k2", b"k3"]
    finally:
        publisher.stop()
        subscriber.close()
