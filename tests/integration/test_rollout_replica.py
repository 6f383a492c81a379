"""A real replica (gunicorn) follows the signed rollout record and nothing else: a canary it
is told about by a signed record, never an unsigned or replayed one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tagloop.channels.registry import ROLLOUT_KEY
from tagloop.domain.messages import StageChange, utc_now
from tagloop.domain.rollout import RolloutRecord, Stage
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import InferenceSetup, inference_setup
from tests.fixtures.wait import wait_until

TITLE = "How to merge two dictionaries in Python?"


def answered_by(setup: InferenceSetup) -> str:
    response = setup.replica.post("/api/predict", json={"title": TITLE})
    assert response.status_code == 200, response.text
    return response.headers["X-Model-Version"]


def announce(setup: InferenceSetup, record: RolloutRecord) -> None:
    """The learner's hint; the replica also re-reads the record every 2 s regardless."""
    change = StageChange(record.version, str(record.stage), record.issued_at)
    setup.publisher.bus.publish(setup.publisher.topic, change)


def test_a_replica_runs_only_the_candidate_a_signed_record_names(
    s3_server: S3Server, pubsub_emulator: str, model_bundle: Path, tmp_path: Path
) -> None:
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        tmp_path / "cache",
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="2",
    ) as setup:
        served, registry = setup.version, setup.publisher.registry
        assert served is not None
        candidate = setup.publisher.publish(broadcast=False, promote=False)
        record = RolloutRecord(
            version=candidate,
            sha256=registry.get_metadata(candidate)["sha256"],
            base_version=served,
            stage=Stage.CANARY,
            canary_fraction=1.0,  # every title: the header then names the candidate
            reason="test",
            issued_at=utc_now(),
        )
        registry.record_stage(record)
        announce(setup, record)
        wait_until(lambda: answered_by(setup) == candidate, timeout=20, what="the canary")

        # Unsigned (anyone with bucket access): refused, the canary stays.
        forged = {**record.to_dict(), "stage": "rolled_back", "issued_at": utc_now()}
        registry.client.put_object(
            Bucket=registry.bucket, Key=ROLLOUT_KEY, Body=json.dumps(forged).encode()
        )
        setup.replica.wait_refused("unsigned", what="the unsigned record refused")
        assert answered_by(setup) == candidate

        # A replayed, older signed record: refused as stale.
        registry.record_stage(
            replace(record, stage=Stage.ROLLED_BACK, issued_at="2020-01-01T00:00:00.000Z")
        )
        setup.replica.wait_refused("stale_record", what="the replayed record refused")
        assert answered_by(setup) == candidate

        # The learner's signed rollback: the candidate is dropped.
        rolled_back = replace(record, stage=Stage.ROLLED_BACK, issued_at=utc_now())
        registry.record_stage(rolled_back)
        announce(setup, rolled_back)
        wait_until(lambda: answered_by(setup) == served, timeout=20, what="the candidate dropped")
        info = setup.replica.metric(
            "tagloop_inference_candidate_info", version=candidate, stage="canary"
        )
        assert info == 0
