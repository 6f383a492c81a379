"""S3 and Pub/Sub outages: ingestion goes on, the commit and the broadcast wait and then happen."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop.channels.bus import Bus
from tagloop.domain.data import load_labeled
from tagloop.domain.messages import Feedback, parse_model_update
from tagloop_dev.s3server import S3Server
from tests.fixtures.learning import DATA_DIR, LearnerStack
from tests.fixtures.pubsub import EmulatorProcess
from tests.fixtures.wait import wait_until

BUCKET = "outage"


def test_outages_delay_but_never_lose_a_correction_a_model_or_a_broadcast(
    learner_stack: LearnerStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = load_labeled(DATA_DIR / "feedback.tsv")
    sent = [Feedback(title=t, tags=g) for t, g in zip(data.titles[:125], data.tags, strict=False)]
    with EmulatorProcess(data_dir=tmp_path / "pubsub") as emulator:
        s3 = S3Server(tmp_path / "s3", port=0, bucket=BUCKET, log_path=tmp_path / "s3.log").start()
        try:
            monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
            bus = Bus(learner_stack.env["TAGLOOP_GCP_PROJECT"])
            updates = bus.ensure_subscription(
                bus.ensure_topic(learner_stack.model_topic), "test-model-updates"
            )
            learner = learner_stack.learner(
                PUBSUB_EMULATOR_HOST=emulator.host,
                TAGLOOP_S3_ENDPOINT_URL=s3.endpoint_url,
                TAGLOOP_S3_BUCKET=BUCKET,
                TAGLOOP_PROMOTION_TOLERANCE="1",
            ).start()
            bootstrap = learner.get("/api/status")["current_version"]

            def stored() -> int:
                return learner.get("/api/status")["corpus"]["feedback_rows"]

            def announced() -> list[str]:
                batch = bus.pull(updates, timeout=1)
                bus.ack(updates, [m.ack_id for m in batch])
                return [parse_model_update(m.data, m.attributes).version for m in batch]

            assert wait_until(announced, what="the bootstrap broadcast") == [bootstrap]

            s3.stop(timeout=1)  # the registry is down
            for message in sent[:100]:
                bus.publish(learner_stack.feedback_topic, message)
            wait_until(lambda: stored() == 100, timeout=20, what="ingestion with S3 down")
            wait_until(
                lambda: learner.metric(
                    "tagloop_dependency_retries_total", operation="registry.current_version"
                ),
                timeout=30,
                what="the refit's commit retrying",
            )
            for message in sent[100:120]:
                bus.publish(learner_stack.feedback_topic, message)
            wait_until(lambda: stored() == 120, timeout=20, what="ingestion during the retries")

            emulator.stop(timeout=5)  # Pub/Sub goes down too, then S3 comes back
            wait_until(
                lambda: learner.get("/api/status")["ready"]["pubsub"] is False,
                timeout=15,
                what="the outage reported",
            )
            s3 = S3Server(tmp_path / "s3", port=s3.port, bucket=BUCKET, log_path=s3.log_path)
            s3.start()
            registry = s3.registry()
            wait_until(
                lambda: registry.current_version() not in (None, bootstrap),
                timeout=60,
                what="the commit after S3 came back",
            )
            refit = registry.current_version()
            status = learner.get("/api/status")
            assert status["pending_broadcast"] == refit
            assert refit is not None
            assert registry.get_metadata(refit)["feedback_rows"] == 100

            emulator.start()  # Pub/Sub is back: the broadcast goes out, ingestion resumes
            assert wait_until(announced, timeout=60, what="the delayed broadcast")[-1] == refit
            for message in sent[120:]:
                bus.publish(learner_stack.feedback_topic, message)
            wait_until(lambda: stored() == 125, timeout=30, what="ingestion after the outage")
            assert learner.get("/api/status")["pending_broadcast"] is None
            assert learner.stop() == 0
            bus.close()
        finally:
            s3.stop(timeout=1)
