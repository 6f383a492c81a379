"""The services with the rights Terraform gives them: no Pub/Sub admin at run time.

The emulator runs with `--deny-admin` (admin RPCs answer PERMISSION_DENIED, as
for the services' service accounts), except for subscriptions with the
inference prefix (their IAM condition). The cloud's resources are made
beforehand on the same data directory by an emulator that allows admin:
Terraform's apply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagloop.channels.bus import Bus
from tagloop.channels.provisioning import (
    INFERENCE_SUBSCRIPTION_PREFIX,
    Provisioner,
    PubSubFailure,
)
from tagloop.domain.messages import Feedback
from tagloop_dev.emulator.launcher import EmulatorProcess
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import ModelPublisher, replica_env, start_replica
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import LearnerStack
from tests.fixtures.pubsub import unique_project
from tests.fixtures.s3 import unique_bucket
from tests.fixtures.wait import wait_until

DENY = ("--deny-admin", "--allow-subscription-prefix", INFERENCE_SUBSCRIPTION_PREFIX)
BLOCKED_LINE = "cannot proceed until this is fixed"
STARTUP_SECONDS = 180  # the bootstrap fit on a machine shared with other work


class Cloud:
    """A project whose resources were made by 'Terraform', served by a denying emulator."""

    def __init__(self, root: Path, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.project, self.monkeypatch = root, project, monkeypatch
        self.emulator: EmulatorProcess | None = None

    def apply(self, subscriptions: dict[str, str]) -> None:
        """Create topics and {subscription: topic} with admin rights, then deny admin."""
        with EmulatorProcess(data_dir=self.root) as admin:
            self.monkeypatch.setenv("PUBSUB_EMULATOR_HOST", admin.host)
            bus = Bus(self.project)
            try:
                for topic in ("tag-feedback", "model-updates"):
                    bus.ensure_topic(topic)
                for subscription, topic in subscriptions.items():
                    bus.ensure_subscription(topic, subscription)
            finally:
                bus.close()
            port = admin.port
        self.emulator = EmulatorProcess(port=port, data_dir=self.root, options=DENY).start()
        self.monkeypatch.setenv("PUBSUB_EMULATOR_HOST", self.emulator.host)

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    instance = Cloud(tmp_path / "pubsub", unique_project("iam"), monkeypatch)
    yield instance
    instance.stop()


def cloud_learner(learner_stack: LearnerStack, cloud: Cloud, provision: str) -> LearnerStack:
    assert cloud.emulator is not None
    learner_stack.env.update(
        PUBSUB_EMULATOR_HOST=cloud.emulator.host,
        TAGLOOP_GCP_PROJECT=cloud.project,
        TAGLOOP_PUBSUB_PROVISION=provision,
    )
    return learner_stack


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    answer = requests.get(f"{url}/readyz", timeout=5)
    return answer.status_code, answer.json()


def test_learner_without_admin_rights_becomes_ready_on_precreated_resources(
    learner_stack: LearnerStack, cloud: Cloud
) -> None:
    cloud.apply({"learner": "tag-feedback"})
    learner = cloud_learner(learner_stack, cloud, "false").learner().start(timeout=STARTUP_SECONDS)
    status, body = readyz(learner.url)
    assert status == 200 and body["reasons"] == {}

    bus = Bus(cloud.project)
    try:
        bus.publish("tag-feedback", Feedback(title="How to sort a dict by value?", tags=["python"]))
    finally:
        bus.close()
    wait_until(
        lambda: learner.metric("tagloop_feedback_accepted_total") == 1,
        timeout=30,
        what="the learner to store the feedback",
    )
    assert "PERMISSION_DENIED" not in learner.output()


def test_a_missing_subscription_is_reported_once_on_readyz_without_a_retry_storm(
    learner_stack: LearnerStack, cloud: Cloud
) -> None:
    cloud.apply({})  # Terraform forgot the learner's subscription
    learner = (
        cloud_learner(learner_stack, cloud, "false")
        .learner()
        .start(ready=False, timeout=STARTUP_SECONDS)
    )

    def reported() -> dict[str, object] | None:
        status, body = readyz(learner.url)
        assert status in (200, 503)
        return body if body["reasons"] else None

    body = wait_until(reported, timeout=60, what="/readyz to give the reason")
    assert body["ready"] is False and body["checks"]["pubsub"] is False  # type: ignore[index]
    reason = body["reasons"]["pubsub.ensure_subscription"]  # type: ignore[index]
    assert f"projects/{cloud.project}/subscriptions/learner" in reason
    assert reason.startswith("not found")

    retries = learner.metric(
        "tagloop_dependency_retries_total", operation="pubsub.ensure_subscription"
    )
    # Slow re-checks: several seconds later still one attempt, one log line.
    with pytest.raises(TimeoutError):
        wait_until(
            lambda: (
                learner.metric(
                    "tagloop_dependency_retries_total", operation="pubsub.ensure_subscription"
                )
                > retries
            ),
            timeout=5,
            what="a second attempt",
        )
    blocked_lines = [line for line in learner.output().splitlines() if BLOCKED_LINE in line]
    assert len(blocked_lines) == 1, blocked_lines
    assert json.loads(blocked_lines[0])["level"] == "error"


def test_a_learner_that_still_provisions_names_the_missing_permission(
    learner_stack: LearnerStack, cloud: Cloud
) -> None:
    cloud.apply({"learner": "tag-feedback"})
    learner = (
        cloud_learner(learner_stack, cloud, "true")
        .learner()
        .start(ready=False, timeout=STARTUP_SECONDS)
    )
    reasons: dict[str, str] = wait_until(
        lambda: readyz(learner.url)[1]["reasons"], timeout=60, what="a reason"
    )
    reason = reasons["pubsub.ensure_subscription"]
    assert reason.startswith("permission denied: create topic")
    assert "pubsub.topics.create" in reason and f"projects/{cloud.project}/topics/" in reason


def test_inference_may_create_only_its_own_subscriptions(cloud: Cloud) -> None:
    cloud.apply({"learner": "tag-feedback"})
    bus = Bus(cloud.project)
    provisioner = Provisioner(bus, provision=False)
    try:
        own = f"{INFERENCE_SUBSCRIPTION_PREFIX}model-updates-host-1-abcd"
        path = provisioner.own_subscription("model-updates", own, 86400, 10)
        assert bus.subscription_topic(own) == bus.topic_path("model-updates")
        bus.delete_subscription(own, timeout=10)
        assert path.endswith(own)

        with pytest.raises(PubSubFailure) as denied:
            provisioner.own_subscription("model-updates", "learner-copy", 86400, 10)
        assert denied.value.permanent
        assert "pubsub.subscriptions.create" in str(denied.value)

        # No topic creation without provisioning: a missing topic is a permanent failure.
        with pytest.raises(PubSubFailure) as missing:
            provisioner.own_subscription("no-such-topic", own, 86400, 10)
        assert missing.value.permanent and str(missing.value).startswith("not found")
    finally:
        bus.close()


def test_an_inference_replica_without_admin_rights_hears_broadcasts_on_its_own_subscription(
    cloud: Cloud, s3_server: S3Server, model_bundle: Path, tmp_path: Path
) -> None:
    cloud.apply({"learner": "tag-feedback"})
    assert cloud.emulator is not None
    bucket = unique_bucket("rights")
    registry = s3_server.registry(bucket, signer=model_signer())
    registry.ensure_bucket()
    bus = Bus(cloud.project)
    publisher = ModelPublisher(registry, bus, "model-updates", model_bundle)
    first = publisher.publish(broadcast=False)
    env = replica_env(
        emulator_host=cloud.emulator.host,
        project=cloud.project,
        s3=s3_server,
        bucket=bucket,
        cache_dir=tmp_path / "cache",
        TAGLOOP_PUBSUB_PROVISION="false",
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="600",  # only a broadcast can switch it in time
    )
    try:
        with start_replica(env, timeout=STARTUP_SECONDS) as replica:
            assert replica.served_version() == first
            assert "model_updates" not in replica.get("/readyz").json()

            def subscribed() -> list[str]:
                listed = bus.subscriber.list_subscriptions(project=f"projects/{cloud.project}")
                return [s.name for s in listed if "/subscriptions/inference-" in s.name]

            wait_until(subscribed, timeout=30, what="the replica's own subscription")
            second = publisher.publish()
            wait_until(lambda: replica.served_version() == second, timeout=30, what="the broadcast")
            assert "PERMISSION_DENIED" not in replica.output()
            assert replica.stop() == 0
        assert subscribed() == []  # deleted at shutdown: its own, so allowed
    finally:
        bus.close()
