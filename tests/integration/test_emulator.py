"""The emulator driven by the unmodified google-cloud-pubsub client (issue 3 acceptance)."""

from __future__ import annotations

import queue
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.pubsub_v1 import types

from tests.fixtures.pubsub import EmulatorProcess, unique_project
from tests.fixtures.wait import wait_until


@dataclass
class Clients:
    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient


@pytest.fixture(scope="module")
def clients(pubsub_emulator: str) -> Iterator[Clients]:
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    yield Clients(publisher, subscriber)
    publisher.stop()
    subscriber.close()


class Names:
    """Topic and subscription paths in a project of this test's own."""

    def __init__(self) -> None:
        self.project = unique_project()

    def topic(self, name: str = "topic") -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, name: str = "sub") -> str:
        return f"projects/{self.project}/subscriptions/{name}"


@pytest.fixture
def names() -> Names:
    return Names()


def make_topic(clients: Clients, names: Names, *subscriptions: str) -> str:
    topic = clients.publisher.create_topic(name=names.topic()).name
    for sub in subscriptions or ("sub",):
        clients.subscriber.create_subscription(name=names.subscription(sub), topic=topic)
    return topic


def pull_now(clients: Clients, subscription: str) -> list[types.ReceivedMessage]:
    """Whatever is deliverable right now (the server answers at once)."""
    with warnings.catch_warnings():  # deprecated in the client, still honoured by Pub/Sub
        warnings.simplefilter("ignore", DeprecationWarning)
        response = clients.subscriber.pull(
            request={"subscription": subscription, "max_messages": 1000, "return_immediately": True}
        )
    return list(response.received_messages)


def test_round_trip_keeps_data_attributes_id_and_publish_time(clients: Clients, names: Names):
    topic = make_topic(clients, names)
    before = datetime.now(UTC) - timedelta(seconds=1)
    message_id = clients.publisher.publish(topic, b"hello", schema="demo.v1", lang="en").result()
    received: queue.Queue[Message] = queue.Queue()

    def on_message(message: Message) -> None:
        received.put(message)
        message.ack()

    future = clients.subscriber.subscribe(names.subscription(), on_message)
    try:
        message = received.get(timeout=10)
    finally:
        future.cancel()
        future.result()
    assert message.message_id == message_id
    assert message.data == b"hello"
    assert dict(message.attributes) == {"schema": "demo.v1", "lang": "en"}
    assert before <= message.publish_time <= datetime.now(UTC)
    assert message.delivery_attempt == 1
    assert pull_now(clients, names.subscription()) == []


def test_streaming_pull_delivers_10000_messages_none_lost_none_twice(
    clients: Clients, names: Names
):
    topic = make_topic(clients, names)
    futures = [clients.publisher.publish(topic, str(i).encode(), n=str(i)) for i in range(10_000)]
    published = {future.result(timeout=60) for future in futures}
    assert len(published) == 10_000
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def on_message(message: Message) -> None:
        assert message.data.decode() == message.attributes["n"]
        with lock:
            seen[message.message_id] += 1
        message.ack()

    future = clients.subscriber.subscribe(names.subscription(), on_message)
    try:
        wait_until(lambda: len(seen) == 10_000, timeout=90, what="10,000 deliveries")
    finally:
        future.cancel()
        future.result()
    assert set(seen) == published
    assert max(seen.values()) == 1
    assert pull_now(clients, names.subscription()) == []  # every ack reached the server


def test_unacked_message_is_redelivered_after_its_deadline(clients: Clients, names: Names):
    topic = make_topic(clients, names)
    message_id = clients.publisher.publish(topic, b"slow").result()
    subscription = names.subscription()
    [first] = pull_now(clients, subscription)
    assert first.delivery_attempt == 1
    clients.subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=1
    )
    assert pull_now(clients, subscription) == []  # leased until the deadline passes
    [again] = wait_until(lambda: pull_now(clients, subscription), timeout=10, what="redelivery")
    assert again.message.message_id == message_id
    assert again.delivery_attempt == 2
    assert again.ack_id != first.ack_id
    clients.subscriber.acknowledge(subscription=subscription, ack_ids=[again.ack_id])
    assert pull_now(clients, subscription) == []


def test_nack_redelivers_at_once(clients: Clients, names: Names):
    topic = make_topic(clients, names)
    clients.publisher.publish(topic, b"retry me").result()
    attempts: queue.Queue[int] = queue.Queue()

    def on_message(message: Message) -> None:
        attempts.put(message.delivery_attempt)
        if message.delivery_attempt == 1:
            message.nack()
        else:
            message.ack()

    future = clients.subscriber.subscribe(names.subscription(), on_message)
    try:
        assert [attempts.get(timeout=10), attempts.get(timeout=10)] == [1, 2]
    finally:
        future.cancel()
        future.result()


def test_each_subscription_of_a_topic_gets_every_message(clients: Clients, names: Names):
    topic = make_topic(clients, names, "sub-a", "sub-b")
    ids = {clients.publisher.publish(topic, f"m{i}".encode()).result() for i in range(50)}
    for sub in ("sub-a", "sub-b"):
        got = {m.message.message_id for m in pull_now(clients, names.subscription(sub))}
        assert got == ids


def test_a_new_subscription_does_not_get_earlier_messages(clients: Clients, names: Names):
    topic = make_topic(clients, names, "early")
    clients.publisher.publish(topic, b"before").result()
    late = clients.subscriber.create_subscription(name=names.subscription("late"), topic=topic)
    after = clients.publisher.publish(topic, b"after").result()
    assert [m.message.message_id for m in pull_now(clients, late.name)] == [after]
    assert len(pull_now(clients, names.subscription("early"))) == 2


def test_missing_resources_surface_as_not_found(clients: Clients, names: Names):
    with pytest.raises(gexc.NotFound):
        clients.publisher.get_topic(topic=names.topic("missing"))
    with pytest.raises(gexc.NotFound):
        clients.publisher.publish(names.topic("missing"), b"x").result(timeout=10)
    with pytest.raises(gexc.NotFound):
        clients.subscriber.create_subscription(
            name=names.subscription(), topic=names.topic("missing")
        )
    with pytest.raises(gexc.NotFound):
        clients.subscriber.pull(subscription=names.subscription("missing"), max_messages=1)


def test_duplicates_are_already_exists_and_bad_input_invalid_argument(
    clients: Clients, names: Names
):
    topic = make_topic(clients, names)
    with pytest.raises(gexc.AlreadyExists):
        clients.publisher.create_topic(name=topic)
    with pytest.raises(gexc.AlreadyExists):
        clients.subscriber.create_subscription(name=names.subscription(), topic=topic)
    with pytest.raises(gexc.InvalidArgument):
        clients.publisher.create_topic(name=f"projects/{names.project}/topics/x")  # too short
    with pytest.raises(gexc.InvalidArgument):
        clients.subscriber.create_subscription(
            name=names.subscription("quick"), topic=topic, ack_deadline_seconds=5
        )
    with pytest.raises(gexc.InvalidArgument):
        clients.subscriber.acknowledge(subscription=names.subscription(), ack_ids=["garbage"])


def test_idle_subscription_expires_after_its_ttl(
    clients: Clients, names: Names, monkeypatch: pytest.MonkeyPatch
):
    """Pub/Sub's minimum TTL is a day; `--short-durations` lets a test see expiry in seconds."""
    topic = make_topic(clients, names, "kept")
    with pytest.raises(gexc.InvalidArgument, match=r"expiration_policy\.ttl"):
        clients.subscriber.create_subscription(
            request={
                "name": names.subscription("replica"),
                "topic": topic,
                "expiration_policy": {"ttl": timedelta(seconds=1)},
            }
        )
    kept = clients.subscriber.get_subscription(subscription=names.subscription("kept"))
    assert kept.expiration_policy.ttl == timedelta(days=31)  # Pub/Sub's default
    with EmulatorProcess(short_durations=True) as emulator:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        subscriber = pubsub_v1.SubscriberClient()
        publisher = pubsub_v1.PublisherClient()
        try:
            publisher.create_topic(name=topic)
            created = subscriber.create_subscription(
                request={
                    "name": names.subscription("replica"),
                    "topic": topic,
                    "expiration_policy": {"ttl": timedelta(seconds=1)},
                }
            )
            assert created.expiration_policy.ttl == timedelta(seconds=1)

            def expired() -> bool:
                try:
                    subscriber.get_subscription(subscription=created.name)
                except gexc.NotFound:
                    return True
                return False

            wait_until(expired, timeout=10, what="the subscription to expire")
        finally:
            subscriber.close()
            publisher.stop()


def test_update_list_and_delete(clients: Clients, names: Names):
    topic = make_topic(clients, names, "sub-1", "sub-2")
    for extra in ("topic-2", "topic-3"):
        clients.publisher.create_topic(name=names.topic(extra))
    pager = clients.publisher.list_topics(
        request={"project": f"projects/{names.project}", "page_size": 2}
    )
    assert [t.name for t in pager] == [names.topic(n) for n in ("topic", "topic-2", "topic-3")]
    assert list(clients.publisher.list_topic_subscriptions(topic=topic)) == [
        names.subscription("sub-1"),
        names.subscription("sub-2"),
    ]
    updated = clients.subscriber.update_subscription(
        request={
            "subscription": {"name": names.subscription("sub-1"), "ack_deadline_seconds": 42},
            "update_mask": {"paths": ["ack_deadline_seconds"]},
        }
    )
    assert updated.ack_deadline_seconds == 42
    assert updated.topic == topic
    clients.subscriber.delete_subscription(subscription=names.subscription("sub-2"))
    clients.publisher.delete_topic(topic=topic)
    subs = clients.subscriber.list_subscriptions(project=f"projects/{names.project}")
    assert [(s.name, s.topic) for s in subs] == [(names.subscription("sub-1"), "_deleted-topic_")]


def test_streaming_pull_respects_the_requested_flow_control(clients: Clients, names: Names):
    topic = make_topic(clients, names)
    for i in range(10):
        clients.publisher.publish(topic, f"{i}".encode()).result()
    subscription = names.subscription()
    done = threading.Event()

    def requests() -> Iterator[types.StreamingPullRequest]:
        yield types.StreamingPullRequest(
            subscription=subscription, stream_ack_deadline_seconds=60, max_outstanding_messages=3
        )
        done.wait(30)

    responses = clients.subscriber.streaming_pull(requests=requests())
    try:
        first = next(responses).received_messages
        assert len(first) == 3  # the window, not the ten that are ready
        clients.subscriber.acknowledge(
            subscription=subscription, ack_ids=[m.ack_id for m in first[:2]]
        )
        second = next(responses).received_messages
        assert len(second) == 2  # exactly what the acks freed
    finally:
        done.set()
        responses.cancel()


def test_streaming_pull_errors_end_the_stream_with_their_status(clients: Clients, names: Names):
    make_topic(clients, names)

    def first_response(request: types.StreamingPullRequest) -> None:
        next(iter(clients.subscriber.streaming_pull(requests=iter([request]))))

    with pytest.raises(gexc.NotFound):
        first_response(
            types.StreamingPullRequest(
                subscription=names.subscription("missing"), stream_ack_deadline_seconds=60
            )
        )
    with pytest.raises(gexc.InvalidArgument):
        first_response(
            types.StreamingPullRequest(
                subscription=names.subscription(), stream_ack_deadline_seconds=60, ack_ids=["bad"]
            )
        )
    with pytest.raises(gexc.InvalidArgument):
        first_response(
            types.StreamingPullRequest(
                subscription=names.subscription(), stream_ack_deadline_seconds=5
            )
        )
