"""Seek to a time and to a snapshot; snapshot create/get/list/delete (deviation 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc

from tests.fixtures.conformance import Target


def _ack_all(conformance: Target, subscription: str, count: int) -> None:
    received = conformance.pull_count(subscription, count)
    conformance.subscriber.acknowledge(
        subscription=subscription, ack_ids=[m.ack_id for m in received]
    )


def test_seek_to_a_time_replays_retained_acked_messages_and_acks_older_ones(
    conformance: Target,
) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic, retain_acked_messages=True)
    before = datetime.now(UTC) - timedelta(seconds=1)
    conformance.publish(topic, b"1", b"2", b"3")
    _ack_all(conformance, subscription, 3)
    conformance.assert_quiet(subscription, 0.2)
    conformance.subscriber.seek(request={"subscription": subscription, "time": before})
    replayed = conformance.pull_count(subscription, 3)
    assert sorted(m.message.data for m in replayed) == [b"1", b"2", b"3"]
    future = datetime.now(UTC) + timedelta(seconds=5)
    conformance.subscriber.seek(request={"subscription": subscription, "time": future})
    conformance.assert_quiet(subscription, 0.5)  # everything before `future` counts as acked


def test_seek_to_a_snapshot_restores_its_unacked_messages_and_later_ones(
    conformance: Target,
) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic)
    conformance.publish(topic, b"before")
    snapshot = conformance.subscriber.create_snapshot(
        request={"name": conformance.snapshot(), "subscription": subscription}
    )
    assert (snapshot.name, snapshot.topic) == (conformance.snapshot(), topic)
    conformance.publish(topic, b"after")
    _ack_all(conformance, subscription, 2)
    conformance.subscriber.seek(
        request={"subscription": subscription, "snapshot": conformance.snapshot()}
    )
    replayed = conformance.pull_count(subscription, 2)
    assert sorted(m.message.data for m in replayed) == [b"after", b"before"]


def test_snapshots_are_listed_fetched_and_deleted(conformance: Target) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic)
    for name in ("snap-a", "snap-b"):
        conformance.subscriber.create_snapshot(
            request={"name": conformance.snapshot(name), "subscription": subscription}
        )
    with pytest.raises(gexc.AlreadyExists):
        conformance.subscriber.create_snapshot(
            request={"name": conformance.snapshot("snap-a"), "subscription": subscription}
        )
    listed = conformance.subscriber.list_snapshots(
        request={"project": f"projects/{conformance.project}"}
    )
    assert sorted(s.name for s in listed) == [
        conformance.snapshot("snap-a"),
        conformance.snapshot("snap-b"),
    ]
    got = conformance.subscriber.get_snapshot(request={"snapshot": conformance.snapshot("snap-a")})
    assert got.topic == topic
    conformance.subscriber.delete_snapshot(request={"snapshot": conformance.snapshot("snap-a")})
    with pytest.raises(gexc.NotFound):
        conformance.subscriber.get_snapshot(request={"snapshot": conformance.snapshot("snap-a")})
    with pytest.raises(gexc.NotFound):
        conformance.subscriber.seek(
            request={"subscription": subscription, "snapshot": conformance.snapshot("snap-a")}
        )
