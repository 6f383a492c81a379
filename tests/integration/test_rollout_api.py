"""The learner's rollout API against a real learner, registry and emulator: manual stage
changes, what it refuses (hostile bodies, unknown versions, changes that make no sense), and
the signed records replicas follow. The automatic path is in tests/e2e/test_rollout.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tagloop.channels.registry import ROLLOUT_KEY, Untrusted, new_version
from tagloop.domain.signing import TrustedKeys
from tagloop_dev.s3server import S3Server
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import ADMIN_TOKEN, LearnerStack, store_copy, tagloop_models

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Candidates: the bootstrap bundle stored again, as if it had passed the gate.
PASSED = {"promoted": True, "reason": "passed the gate (test)"}


def stage(url: str, version: str, body: Any, headers: dict[str, str] | None = AUTH) -> Any:
    return requests.post(
        f"{url}/api/models/{version}/stage", json=body, headers=headers or {}, timeout=30
    )


def test_manual_stage_changes_are_validated_signed_and_recorded(
    learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path
) -> None:
    learner = learner_stack.learner(
        TAGLOOP_REFIT_EVERY="100000",
        TAGLOOP_ROLLOUT_ENABLED="true",
        TAGLOOP_ROLLOUT_SHADOW_MIN_CORRECTIONS="1000",
    ).start()
    registry = s3_server.registry(learner_stack.registry.bucket, signer=model_signer())
    bootstrap = learner.get("/api/status")["current_version"]
    candidate = store_copy(registry, bootstrap, tmp_path, PASSED)
    assert learner.get("/api/rollout")["rollout"] is None

    assert stage(learner.url, candidate, {"stage": "shadow"}, headers=None).status_code == 401
    bodies: list[Any] = [
        [],
        "shadow",
        {"stage": "everywhere"},
        {"stage": 3},
        {"stage": "canary", "reason": ""},
        {"stage": "canary", "reason": "x" * 501},
        {"stage": "canary", "reason": ["list"]},
    ]
    for body in bodies:
        answer = stage(learner.url, candidate, body)
        assert answer.status_code == 422, (body, answer.text)
    assert stage(learner.url, "not-a-version", {"stage": "shadow"}).status_code == 400
    assert stage(learner.url, new_version(), {"stage": "shadow"}).status_code == 404
    refused = stage(learner.url, candidate, {"stage": "rolled_back"})
    assert refused.status_code == 409 and "not in rollout" in refused.text
    assert stage(learner.url, bootstrap, {"stage": "shadow"}).status_code == 409  # current

    started = stage(learner.url, candidate, {"stage": "shadow", "reason": "try\nit"})
    assert started.status_code == 200, started.text
    assert started.json()["reason"] == "operator: try it"  # one line in logs and records
    record = registry.rollout_record()
    assert record is not None and (record.version, str(record.stage)) == (candidate, "shadow")
    assert record.base_version == bootstrap
    assert stage(learner.url, candidate, {"stage": "shadow"}).status_code == 409  # already

    assert stage(learner.url, candidate, {"stage": "canary"}).status_code == 200
    status = learner.get("/api/rollout")
    assert status["rollout"]["stage"] == "canary"
    assert status["evidence"]["corrections"] == 0
    assert [change["stage"] for change in status["history"]] == ["shadow", "canary"]
    stages = learner.get(f"/api/models/{candidate}/stages")["stages"]
    assert [change["reason"] for change in stages] == [
        "operator: try it",
        "operator: changed by an operator",
    ]
    assert learner.get(f"/api/models/{bootstrap}/stages") == {"version": bootstrap, "stages": []}
    assert requests.get(f"{learner.url}/api/models/x..y/stages", timeout=10).status_code == 400

    # A manual promotion of the candidate ends its rollout in full.
    promoted = learner.post(f"/api/models/{candidate}/promote")
    assert promoted.status_code == 200, promoted.text
    assert registry.current_version() == candidate
    assert learner.get("/api/rollout")["rollout"]["stage"] == "full"
    assert learner.stop() == 0


def test_a_manual_promotion_of_another_version_supersedes_the_rollout(
    learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path
) -> None:
    learner = learner_stack.learner(
        TAGLOOP_REFIT_EVERY="100000", TAGLOOP_ROLLOUT_SHADOW_MIN_CORRECTIONS="1000"
    ).start()
    registry = s3_server.registry(learner_stack.registry.bucket, signer=model_signer())
    bootstrap = learner.get("/api/status")["current_version"]
    first, second = (
        store_copy(registry, bootstrap, tmp_path, PASSED),
        store_copy(registry, bootstrap, tmp_path, PASSED),
    )
    assert stage(learner.url, second, {"stage": "canary"}).status_code == 200
    # `tagloop models rollback` during a rollout stops it; the served version stays.
    rolled = tagloop_models(learner.url, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["current_version"] == bootstrap
    record = registry.rollout_record()
    assert record is not None and (record.version, str(record.stage)) == (second, "rolled_back")
    assert registry.current_version() == bootstrap

    assert stage(learner.url, first, {"stage": "canary"}).status_code == 200
    assert learner.post(f"/api/models/{second}/promote").status_code == 200
    record = registry.rollout_record()
    assert record is not None and str(record.stage) == "rolled_back"
    assert record.reason == f"superseded: an operator promoted {second}"
    decision = registry.get_metadata(first)["decision"]
    assert decision["promoted"] is False and "rolled back from canary" in decision["reason"]
    assert learner.stop() == 0


def test_a_forged_rollout_record_is_refused_and_replaced(
    learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = learner_stack.registry.bucket
    s3_server.registry(bucket).ensure_bucket()
    forged = {
        "version": new_version(),
        "sha256": "0" * 64,
        "base_version": None,
        "stage": "canary",
        "canary_fraction": 1.0,
        "reason": "forged",
        "issued_at": "2026-11-30T18:00:00.000Z",
    }
    writer = s3_server.registry(bucket)  # no signer: what anyone with bucket access can write
    writer.client.put_object(Bucket=bucket, Key=ROLLOUT_KEY, Body=json.dumps(forged).encode())
    reader = s3_server.registry(bucket, trusted=TrustedKeys.of([model_signer().public]))
    with pytest.raises(Untrusted) as refused:
        reader.rollout_record()
    assert refused.value.reason == "unsigned"

    # The learner ignores it, and its next stage change writes a signed record over it.
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    assert learner.get("/api/rollout")["rollout"] is None
    signed = s3_server.registry(bucket, signer=model_signer())
    candidate = store_copy(signed, learner.get("/api/status")["current_version"], tmp_path, PASSED)
    assert stage(learner.url, candidate, {"stage": "shadow"}).status_code == 200
    record = reader.rollout_record()
    assert record is not None and record.version == candidate
    assert learner.stop() == 0
