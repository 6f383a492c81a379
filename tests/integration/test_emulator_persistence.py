"""`--data-dir`: the emulator's state survives restarts and crashes; the CLI entry point."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from tests.fixtures.pubsub import EmulatorProcess, free_port
from tests.fixtures.wait import wait_until

PROJECT = "persist"
TOPIC = f"projects/{PROJECT}/topics/events"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/worker"


class Session:
    """Fresh clients per emulator incarnation (no reconnect back-off in the way)."""

    def __init__(self, emulator: EmulatorProcess, patch: pytest.MonkeyPatch) -> None:
        patch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def pull(self, expected: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
        """Pull until `expected` messages arrived: message_id -> (ack_id, data, attributes)."""
        got: dict[str, tuple[str, bytes, dict[str, str]]] = {}

        def more() -> bool:
            response = self.subscriber.pull(subscription=SUBSCRIPTION, max_messages=100, timeout=2)
            for item in response.received_messages:
                message = item.message
                got[message.message_id] = (item.ack_id, message.data, dict(message.attributes))
            return len(got) >= expected

        wait_until(more, timeout=15, what=f"{expected} messages")
        return got

    def close(self) -> None:
        self.publisher.stop()
        self.publisher.transport.close()
        self.subscriber.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "pubsub"


@pytest.fixture
def emulator(data_dir: Path) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(data_dir=data_dir)
    yield process
    process.stop(signal.SIGKILL)


def open_session(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> Session:
    emulator.start()
    return Session(emulator, monkeypatch)


def test_restart_keeps_unacked_messages_and_acked_ones_stay_acked(
    emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
):
    session = open_session(emulator, monkeypatch)
    session.publisher.create_topic(name=TOPIC)
    session.subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)
    ids = [session.publisher.publish(TOPIC, f"m{i}".encode(), i=str(i)).result() for i in range(3)]
    delivered = session.pull(3)
    session.subscriber.acknowledge(subscription=SUBSCRIPTION, ack_ids=[delivered[ids[0]][0]])
    session.close()
    assert emulator.stop(signal.SIGTERM) == 0

    session = open_session(emulator, monkeypatch)
    assert session.publisher.get_topic(topic=TOPIC).name == TOPIC
    assert session.subscriber.get_subscription(subscription=SUBSCRIPTION).topic == TOPIC
    again = session.pull(2)
    assert {k: v[1:] for k, v in again.items()} == {
        ids[1]: (b"m1", {"i": "1"}),
        ids[2]: (b"m2", {"i": "2"}),
    }
    newer = session.publisher.publish(TOPIC, b"after restart").result()
    assert newer not in ids  # message ids are never reused
    session.close()


def test_a_crash_loses_no_confirmed_publish(
    emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
):
    session = open_session(emulator, monkeypatch)
    session.publisher.create_topic(name=TOPIC)
    session.subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)
    futures = [session.publisher.publish(TOPIC, f"{i}".encode()) for i in range(500)]
    ids = {future.result() for future in futures}
    session.close()
    emulator.stop(signal.SIGKILL)  # no flush on the way out: only what was fsync'd counts

    session = open_session(emulator, monkeypatch)
    assert set(session.pull(500)) == ids
    session.close()


def test_a_data_dir_serves_one_emulator_at_a_time(emulator: EmulatorProcess, data_dir: Path):
    emulator.start()
    second = subprocess.run(
        [
            ".venv/bin/tagloop",
            "pubsub-emulator",
            "--port",
            str(free_port()),
            "--data-dir",
            data_dir,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "in use by another emulator" in second.stderr


def test_a_seek_and_a_dead_letter_forward_survive_a_crash(
    emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
):
    """Seek re-adds acked messages, dead-lettering publishes: both are durable at once."""
    session = open_session(emulator, monkeypatch)
    dead_topic = f"projects/{PROJECT}/topics/dead"
    dead_sub = f"projects/{PROJECT}/subscriptions/dead-inspect"
    poison_sub = f"projects/{PROJECT}/subscriptions/poison"
    session.publisher.create_topic(name=TOPIC)
    session.publisher.create_topic(name=dead_topic)
    session.subscriber.create_subscription(name=dead_sub, topic=dead_topic)
    session.subscriber.create_subscription(
        request={"name": SUBSCRIPTION, "topic": TOPIC, "retain_acked_messages": True}
    )
    session.subscriber.create_subscription(
        request={
            "name": poison_sub,
            "topic": TOPIC,
            "dead_letter_policy": {"dead_letter_topic": dead_topic, "max_delivery_attempts": 5},
        }
    )
    before = session.publisher.publish(TOPIC, b"replay-me").result(timeout=30)
    got = session.pull(1)
    session.subscriber.acknowledge(subscription=SUBSCRIPTION, ack_ids=[got[before][0]])
    session.subscriber.seek(request={"subscription": SUBSCRIPTION, "time": {"seconds": 0}})

    def nack_once() -> bool:
        response = session.subscriber.pull(subscription=poison_sub, max_messages=1, timeout=2)
        for item in response.received_messages:
            session.subscriber.modify_ack_deadline(
                subscription=poison_sub, ack_ids=[item.ack_id], ack_deadline_seconds=0
            )
        return bool(response.received_messages)

    for _ in range(5):
        wait_until(nack_once, timeout=10, what="a delivery to nack")
    session.close()
    emulator.stop(signal.SIGKILL)

    session = open_session(emulator, monkeypatch)
    try:
        assert [data for _, data, _ in session.pull(1).values()] == [b"replay-me"]
        response = session.subscriber.pull(subscription=dead_sub, max_messages=10, timeout=5)
        [forwarded] = response.received_messages
        assert forwarded.message.data == b"replay-me"
        assert forwarded.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    finally:
        session.close()
