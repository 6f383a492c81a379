"""tagloop.channels.bus against the emulator: the interface the services build on."""

from __future__ import annotations

import itertools
import json
import queue
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tagloop.channels.bus import (
    Bus,
    PublishError,
    Received,
    RejectLog,
    parse_or_reject,
    unique_subscription_name,
)
from tagloop.domain.messages import FEEDBACK_SCHEMA, Feedback, ModelUpdate, parse_feedback
from tests.fixtures.pubsub import unique_project
from tests.fixtures.wait import wait_until


class Raw:
    """A payload as a buggy or hostile publisher might send it."""

    def __init__(self, data: bytes, attributes: dict[str, str]) -> None:
        self.data, self.attributes = data, attributes

    def to_message(self) -> tuple[bytes, dict[str, str]]:
        return self.data, self.attributes


def feedback(title: str = "How to draw a stacked dotplot in R?") -> Feedback:
    return Feedback(title=title, tags=["r", "ggplot2"], predicted_tags=["r"])


def test_publish_pull_ack_round_trip(bus: Bus):
    bus.ensure_topic("tag-feedback")
    bus.ensure_subscription("tag-feedback", "learner")
    sent = feedback()
    before = datetime.now(UTC) - timedelta(seconds=1)
    message_id = bus.publish("tag-feedback", sent)
    [received] = bus.pull("learner", timeout=5)
    assert received.message_id == message_id
    assert received.attributes == {"schema": FEEDBACK_SCHEMA}
    assert parse_feedback(received.data, received.attributes) == sent
    assert before <= received.publish_time <= datetime.now(UTC)
    assert received.delivery_attempt in (1, None)  # None: no dead-letter policy (Pub/Sub)
    bus.ack("learner", [received.ack_id])
    assert bus.pull("learner", timeout=1) == []  # acked, and an empty pull is not an error


def test_ensure_is_idempotent_and_refuses_a_subscription_on_another_topic(bus: Bus):
    assert bus.ensure_topic("model-updates") == bus.ensure_topic("model-updates")
    path = bus.ensure_subscription("model-updates", "replica", expiration_ttl_seconds=86400)
    assert bus.ensure_subscription("model-updates", "replica", expiration_ttl_seconds=86400) == path
    config = bus.subscriber.get_subscription(subscription=path)
    assert config.expiration_policy.ttl == timedelta(days=1)  # Pub/Sub's minimum TTL
    assert config.ack_deadline_seconds == 60
    bus.ensure_topic("other")
    with pytest.raises(ValueError, match="exists on"):
        bus.ensure_subscription("other", "replica")
    bus.delete_subscription("replica")
    bus.delete_subscription("replica")  # already gone is fine


def test_publish_to_a_missing_topic_raises_publish_error(bus: Bus):
    with pytest.raises(PublishError, match="missing"):
        bus.publish("missing", feedback(), timeout=10)


def test_subscribe_acks_on_return_and_redelivers_after_an_exception(bus: Bus):
    bus.ensure_topic("model-updates")
    bus.ensure_subscription("model-updates", "replica")
    update = ModelUpdate(
        version="20261122T051500123Z-1a2b3c",
        artifact_uri="s3://tagloop-models/models/20261122T051500123Z-1a2b3c/model.npz",
        sha256="0" * 64,
        created_at="2026-11-22T05:15:00.123Z",
        metrics={"f1_macro": 0.5},
    )
    attempts: queue.Queue[Received] = queue.Queue()
    deliveries = itertools.count(1)  # the queue is drained by the test: count apart

    def handle(received: Received) -> None:
        attempts.put(received)
        if next(deliveries) == 1:
            raise RuntimeError("transient failure")

    bus.publish("model-updates", update)
    future = bus.subscribe("replica", handle)
    try:
        first, second = attempts.get(timeout=10), attempts.get(timeout=10)
    finally:
        future.cancel()
        future.result()
    # Pub/Sub counts attempts only on subscriptions with a dead-letter policy
    # (the official emulator: None); the project's emulator always counts.
    assert (first.delivery_attempt, second.delivery_attempt) in {(1, 2), (None, None)}
    assert first.message_id == second.message_id
    assert bus.pull("replica", timeout=1) == []  # the second delivery was acked


def test_malformed_payload_is_rejected_logged_and_acked(bus: Bus, tmp_path: Path):
    bus.ensure_topic("tag-feedback")
    bus.ensure_subscription("tag-feedback", "learner")
    rejects = RejectLog(tmp_path / "rejects" / "feedback.jsonl")
    results: queue.Queue[tuple[Feedback | None, str | None]] = queue.Queue()
    bad_id = bus.publish("tag-feedback", Raw(b"{not json", {"schema": FEEDBACK_SCHEMA}))
    good = feedback("Why is my pandas merge slow?")
    bus.publish("tag-feedback", good)

    future = bus.subscribe(
        "learner", lambda r: results.put(parse_or_reject(r, parse_feedback, rejects))
    )
    try:
        outcomes = [results.get(timeout=10), results.get(timeout=10)]
    finally:
        future.cancel()
        future.result()
    assert sorted(outcomes, key=lambda o: o[1] or "") == [(good, None), (None, "not_json")]
    [line] = (tmp_path / "rejects" / "feedback.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert (entry["reason"], entry["message_id"]) == ("not_json", bad_id)
    assert entry["data_preview"] == "{not json"
    assert entry["attributes"] == {"schema": FEEDBACK_SCHEMA}
    assert bus.pull("learner", timeout=1) == []  # both acked: the bad one is not retried


def test_unique_subscription_names_are_unique_and_valid(bus: Bus):
    names = {unique_subscription_name("inference") for _ in range(100)}
    assert len(names) == 100
    assert all(name.startswith("inference-") for name in names)
    long = unique_subscription_name("x" * 300 + "/odd name")
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}", long)
    bus.ensure_topic("model-updates")
    bus.ensure_subscription("model-updates", long, expiration_ttl_seconds=86400)


def test_clients_are_created_in_the_process_that_uses_them(any_pubsub_emulator: str):
    """A Bus built before a fork (gunicorn preload) works in the forked worker."""
    project = unique_project()
    script = textwrap.dedent(
        f"""
        import os, sys
        from tagloop.channels.bus import Bus
        from tagloop.domain.messages import Feedback
        bus = Bus({project!r})   # built in the parent, no channel yet
        bus.ensure_topic("t-forked")
        bus.ensure_subscription("t-forked", "s-forked")
        pid = os.fork()
        if pid == 0:
            bus.publish("t-forked", Feedback(title="from the child", tags=["python"]))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    bus = Bus(project)
    received = wait_until(
        lambda: bus.pull("s-forked", timeout=2), timeout=10, what="the child's message"
    )
    assert parse_feedback(received[0].data, received[0].attributes).title == "from the child"
    bus.close()
