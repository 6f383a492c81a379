"""Subscription and topic updates, detach, push config (deviations 4 and 5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.api_core import exceptions as gexc

from tests.fixtures.conformance import Target


def test_subscription_updates_the_fields_clients_change(conformance: Target) -> None:
    topic = conformance.make_topic()
    dead = conformance.make_topic("dead")
    subscription = conformance.make_subscription(topic)
    updated = conformance.subscriber.update_subscription(
        request={
            "subscription": {
                "name": subscription,
                "ack_deadline_seconds": 30,
                "retry_policy": {
                    "minimum_backoff": timedelta(seconds=5),
                    "maximum_backoff": timedelta(seconds=60),
                },
                "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 7},
                "message_retention_duration": timedelta(hours=1),
                "retain_acked_messages": True,
                "enable_exactly_once_delivery": True,
            },
            "update_mask": {
                "paths": [
                    "ack_deadline_seconds",
                    "retry_policy",
                    "dead_letter_policy",
                    "message_retention_duration",
                    "retain_acked_messages",
                    "enable_exactly_once_delivery",
                ]
            },
        }
    )
    fetched = conformance.subscriber.get_subscription(subscription=subscription)
    for config in (updated, fetched):
        assert config.ack_deadline_seconds == 30
        assert config.retry_policy.minimum_backoff == timedelta(seconds=5)
        assert config.dead_letter_policy.max_delivery_attempts == 7
        assert config.message_retention_duration == timedelta(hours=1)
        assert config.retain_acked_messages and config.enable_exactly_once_delivery
        assert config.topic == topic
    with pytest.raises(gexc.OutOfRange, match="max_delivery_attempts"):
        conformance.subscriber.update_subscription(
            request={
                "subscription": {
                    "name": subscription,
                    "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 1},
                },
                "update_mask": {"paths": ["dead_letter_policy"]},
            }
        )


def test_labels_update_on_topics_and_subscriptions(conformance: Target) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic)
    labels = {"team": "tagloop"}
    mask = {"paths": ["labels"]}
    updates = [
        (
            conformance.publisher.update_topic,
            {"topic": {"name": topic, "labels": labels}, "update_mask": mask},
        ),
        (
            conformance.subscriber.update_subscription,
            {"subscription": {"name": subscription, "labels": labels}, "update_mask": mask},
        ),
    ]
    for update, request in updates:
        if conformance.official:
            # Documented gap of the official emulator (SDK 528): it refuses "labels" in
            # update masks ("labels is not a known Topic/Subscription field"); the
            # service accepts it.
            with pytest.raises(gexc.InvalidArgument, match="labels"):
                update(request=request)
            continue
        assert dict(update(request=request).labels) == labels
    if not conformance.official:
        assert dict(conformance.publisher.get_topic(topic=topic).labels) == labels
        assert dict(conformance.subscriber.get_subscription(subscription=subscription).labels) == (
            labels
        )


def test_detach_stops_delivery(conformance: Target) -> None:
    topic = conformance.make_topic()
    subscription = conformance.make_subscription(topic)
    conformance.publish(topic, b"x")
    request = {"subscription": subscription}
    if conformance.official:
        # Documented gap of the official emulator (SDK 528): DetachSubscription is
        # UNIMPLEMENTED there.
        with pytest.raises(gexc.MethodNotImplemented):
            conformance.publisher.detach_subscription(request=request)
        return
    conformance.publisher.detach_subscription(request=request)
    assert conformance.subscriber.get_subscription(subscription=subscription).detached
    with pytest.raises(gexc.FailedPrecondition, match="detached"):
        conformance.pull_now(subscription)
    assert list(conformance.publisher.list_topic_subscriptions(topic=topic)) == []


def test_push_subscriptions(conformance: Target) -> None:
    topic = conformance.make_topic()
    config: dict[str, object] = {"push_config": {"push_endpoint": "http://127.0.0.1:9/push"}}
    if conformance.official:
        conformance.make_subscription(topic, **config)  # the official emulator pushes
        return
    # The project's emulator has no push delivery: refused by name, never stored and ignored.
    with pytest.raises(gexc.MethodNotImplemented, match="Push delivery"):
        conformance.make_subscription(topic, **config)
    subscription = conformance.make_subscription(topic)
    with pytest.raises(gexc.MethodNotImplemented, match="Push delivery"):
        conformance.subscriber.modify_push_config(request={"subscription": subscription, **config})
    conformance.subscriber.modify_push_config(  # back to pull: what it already is
        request={"subscription": subscription, "push_config": {}}
    )
