"""The ingest loop's contract with Pub/Sub, in-process on the real emulator and client:
acked only once stored, bad payloads acked too, nothing acked when storing fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from learning_service.agreement import Agreement
from learning_service.ingest import Ingestor
from learning_service.metrics import LearnerMetrics
from learning_service.store import FeedbackStore
from learning_service.training import NewTagSupport
from tagloop.channels.bus import Bus, Received, RejectLog
from tagloop.domain.messages import Feedback
from tagloop_dev.launchers import metric
from tests.fixtures.learning import file_size_limit
from tests.fixtures.pubsub import free_port
from tests.fixtures.wait import wait_until

TOPIC, SUBSCRIPTION = "tag-feedback", "learner"


@pytest.fixture
def subscribed(bus: Bus) -> Bus:
    bus.ensure_topic(TOPIC)
    bus.ensure_subscription(TOPIC, SUBSCRIPTION, ack_deadline_seconds=10)
    return bus


@pytest.fixture
def ingestor(subscribed: Bus, tmp_path: Path) -> Iterator[Ingestor]:
    store = FeedbackStore(tmp_path / "feedback.csv")
    ingestor = Ingestor(
        subscribed,
        TOPIC,
        SUBSCRIPTION,
        store,
        RejectLog(tmp_path / "rejects.jsonl"),
        LearnerMetrics(),
        NewTagSupport({"python", "java"}, min_support=3),
        Agreement(),
        on_stored=lambda _rows: None,
        stop=threading.Event(),
    )
    yield ingestor
    store.close()


def pull_all(bus: Bus, count: int) -> list[Received]:
    batch: list[Received] = []

    def more() -> bool:
        batch.extend(bus.pull(SUBSCRIPTION, timeout=1))
        return len(batch) >= count

    wait_until(more, timeout=15, what=f"{count} messages")
    return batch


def expire_leases(bus: Bus, batch: list[Received]) -> None:
    """Deadline 0 on every ack id: whatever was not acked is redelivered at once."""
    bus.subscriber.modify_ack_deadline(
        request={
            "subscription": bus.subscription_path(SUBSCRIPTION),
            "ack_ids": [m.ack_id for m in batch],
            "ack_deadline_seconds": 0,
        }
    )


def value(ingestor: Ingestor, name: str, **labels: str) -> float:
    return metric(generate_latest(ingestor.metrics.registry).decode(), name, **labels)


def test_expired_leases_are_redelivered_which_is_what_the_ack_checks_rely_on(subscribed: Bus):
    subscribed.publish(TOPIC, Feedback(title="t", tags=["java"]))
    first = pull_all(subscribed, 1)
    expire_leases(subscribed, first)
    [again] = pull_all(subscribed, 1)
    assert again.message_id == first[0].message_id


def test_a_batch_is_stored_deduplicated_and_every_message_acked(ingestor: Ingestor):
    bus = ingestor.bus
    one = Feedback(title="Read a file in Java", tags=["java"], predicted_tags=["java", "io"])
    new_tag = Feedback(title="Tensors in TensorFlow", tags=["tensorflow", "python"])
    for message in (one, one, new_tag):
        bus.publish(TOPIC, message)
    path = bus.topic_path(TOPIC)
    bus.publisher.publish(path, b"not json", schema="tagloop.feedback.v1").result(10)

    batch = pull_all(bus, 4)
    stored = ingestor.handle(batch)
    assert [r.feedback_id for r in stored] == [one.feedback_id, new_tag.feedback_id]
    assert len(ingestor.store) == 2
    expire_leases(bus, batch)
    assert bus.pull(SUBSCRIPTION, timeout=1) == []  # all four were acked

    assert value(ingestor, "tagloop_feedback_received_total") == 4
    assert value(ingestor, "tagloop_feedback_accepted_total") == 2
    assert value(ingestor, "tagloop_feedback_duplicate_total") == 1
    assert value(ingestor, "tagloop_feedback_rejected_total", reason="not_json") == 1
    assert value(ingestor, "tagloop_new_tags_held_back") == 1
    assert value(ingestor, "tagloop_online_precision") == 0.5
    assert value(ingestor, "tagloop_online_recall") == 1.0

    bus.publish(TOPIC, one)  # a redelivery after a crash, say
    assert ingestor.handle(pull_all(bus, 1)) == []
    assert value(ingestor, "tagloop_feedback_duplicate_total") == 2


def test_nothing_is_acked_when_the_batch_cannot_be_stored(ingestor: Ingestor):
    bus = ingestor.bus
    bus.publish(TOPIC, Feedback(title="Read a file in Java", tags=["java"]))
    batch = pull_all(bus, 1)
    with file_size_limit(ingestor.store.path.stat().st_size), pytest.raises(OSError):
        ingestor.handle(batch)  # the disk is full
    expire_leases(bus, batch)
    [again] = pull_all(bus, 1)
    assert again.message_id == batch[0].message_id
    assert ingestor.handle([again]) != []  # stored once the disk has room again


def test_with_pubsub_unreachable_the_loop_backs_off_reports_it_and_stops_promptly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens
    bus = Bus("unreachable")
    store = FeedbackStore(tmp_path / "feedback.csv")
    stop = threading.Event()
    ingestor = Ingestor(
        bus,
        TOPIC,
        SUBSCRIPTION,
        store,
        RejectLog(tmp_path / "rejects.jsonl"),
        LearnerMetrics(),
        NewTagSupport(set(), min_support=3),
        Agreement(),
        on_stored=lambda _rows: None,
        stop=stop,
    )
    ingestor.start()
    wait_until(
        lambda: (
            value(
                ingestor, "tagloop_dependency_retries_total", operation="pubsub.ensure_subscription"
            )
            >= 2
        ),
        timeout=10,
        what="retries of the subscription set-up",
    )
    assert not ingestor.connected
    stop.set()
    ingestor.join(timeout=5)
    assert not ingestor.is_alive()
    store.close()
    bus.close()


def test_messages_that_cannot_be_stored_are_rejected_alone_and_the_rest_stored(
    ingestor: Ingestor,
):
    """Issue 11, reproductions 1, 2, 5 and 6 as published payloads: poison isolation."""
    bus = ingestor.bus
    good = [Feedback(title=f"Read a file in Java, take {i}", tags=["java"]) for i in range(3)]
    poison = {
        b'{"title": "How do I \\ud800 parse", "tags": ["python"]}': "invalid_unicode",
        b'{"title": "\\u0000\\u0000", "tags": ["python"]}': "empty_title",
        b'{"title": "x", "tags": ["python"], "n": ' + b"1" * 4301 + b"}": "number_too_large",
        b'{"title": "x", "tags": ["python"], "model_version": "v\\u0000"}': "bad_model_version",
        b'{"title": "x", "tags": ["python"], "feedback_id": "' + b"f" * 1000 + b'"}': (
            "bad_feedback_id"
        ),
    }
    path = bus.topic_path(TOPIC)
    bus.publish(TOPIC, good[0])
    for data in poison:
        bus.publisher.publish(path, data, schema="tagloop.feedback.v1").result(10)
    for message in good[1:]:
        bus.publish(TOPIC, message)

    batch = pull_all(bus, len(good) + len(poison))
    stored = ingestor.handle(batch)
    assert sorted(r.feedback_id for r in stored) == sorted(m.feedback_id for m in good)
    for reason in poison.values():
        assert value(ingestor, "tagloop_feedback_rejected_total", reason=reason) == 1
    expire_leases(bus, batch)
    assert bus.pull(SUBSCRIPTION, timeout=1) == []  # every one acked, the poison too
    assert ingestor.rejects.path is not None
    rejected = ingestor.rejects.path.read_text().splitlines()
    assert len(rejected) == len(poison)
