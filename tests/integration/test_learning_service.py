"""The learner as `tagloop serve learning` against the emulator and SeaweedFS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop.channels.bus import Bus
from tagloop.domain.data import load_labeled
from tagloop.domain.messages import Feedback, ModelUpdate, parse_model_update
from tagloop_dev.launchers import LearnerProcess, metric
from tests.fixtures.learning import DATA_DIR, LearnerStack
from tests.fixtures.wait import wait_until

METADATA_KEYS = {
    "version",
    "created_at",
    "training_rows",
    "sha256",
    "artifact",
    "metrics",
    "parent_version",
    "decision",
    "library_versions",
    "training_data_sha256",
    "training_tag_counts",  # the prior of the replicas' drift metrics
}


@pytest.fixture(scope="module")
def feedback_rows() -> list[tuple[str, list[str]]]:
    data = load_labeled(DATA_DIR / "feedback.tsv")
    return list(zip(data.titles, data.tags, strict=True))


def publish(bus: Bus, topic: str, messages: list[Feedback]) -> None:
    """Publish concurrently and wait until the server confirmed every message."""
    path = bus.ensure_topic(topic)
    futures = []
    for message in messages:
        data, attributes = message.to_message()
        futures.append(bus.publisher.publish(path, data, **attributes))
    for future in futures:
        future.result(timeout=30)


def pull_updates(bus: Bus, subscription: str) -> list[ModelUpdate]:
    updates = []
    while batch := bus.pull(subscription, timeout=1):
        bus.ack(subscription, [m.ack_id for m in batch])
        updates += [parse_model_update(m.data, m.attributes) for m in batch]
    return updates


def settled(learner: LearnerProcess, feedback_rows: int) -> dict:
    """The status once every message is stored and no further fit is due or running."""
    status = learner.get("/api/status")
    done = (
        status["corpus"]["feedback_rows"] == feedback_rows
        and status["samples_since_fit"] < status["refit_every"]
        and not status["fit_in_progress"]
        and status["pending_broadcast"] is None
    )
    return status if done else {}


def test_250_corrections_with_refit_every_100_refit_exactly_twice(
    learner_stack: LearnerStack, feedback_rows: list[tuple[str, list[str]]]
):
    updates = learner_stack.subscribe_updates()
    learner = learner_stack.learner(
        TAGLOOP_PROMOTION_TOLERANCE="1.0", TAGLOOP_PROMOTION_TAG_FLOOR="1.0"
    ).start()
    bootstrap = learner.get("/api/status")["current_version"]
    assert [u.version for u in wait_until(lambda: pull_updates(learner_stack.bus, updates))] == [
        bootstrap
    ]

    sent = [
        Feedback(title=title, tags=tags, predicted_tags=tags[:1], model_version=bootstrap)
        for title, tags in feedback_rows[:250]
    ]
    publish(learner_stack.bus, learner_stack.feedback_topic, sent)
    status = wait_until(lambda: settled(learner, 250), timeout=60, what="two refits")

    versions = learner_stack.registry.list_versions()
    assert versions[0]["version"] == bootstrap
    refits = versions[1:]
    assert len(refits) == 2
    for parent, meta in zip([bootstrap, refits[0]["version"]], refits, strict=True):
        assert meta.keys() >= METADATA_KEYS
        assert meta["parent_version"] == parent
        assert meta["decision"]["promoted"] is True
        assert 0 < meta["metrics"]["f1_macro"] <= 1
        assert meta["trigger"] == "samples"
    assert refits[0]["feedback_rows"] == 100
    assert refits[1]["feedback_rows"] in range(200, 251)
    assert refits[1]["training_rows"] > refits[0]["training_rows"] > versions[0]["training_rows"]
    assert (
        learner_stack.registry.current_version()
        == refits[1]["version"]
        == status["current_version"]
    )

    announced = wait_until(lambda: pull_updates(learner_stack.bus, updates), what="2 updates")
    assert [u.version for u in announced] == [m["version"] for m in refits]
    assert [u.sha256 for u in announced] == [m["sha256"] for m in refits]
    assert announced[1].artifact_uri.endswith(f"/models/{refits[1]['version']}/model.npz")
    assert pull_updates(learner_stack.bus, updates) == []

    assert status["online_quality"]["precision"] == 1.0
    assert learner.metric("tagloop_feedback_accepted_total") == 250
    assert learner.metric("tagloop_model_promotions_total", reason="gate_passed") == 2
    assert learner.metric("tagloop_model_info", version=refits[1]["version"]) == 1
    assert learner.metric("tagloop_model_f1_macro") == refits[1]["metrics"]["f1_macro"]
    assert learner.metric("tagloop_fit_duration_seconds_count") == 3
    assert learner.metric("tagloop_samples_since_fit") == status["samples_since_fit"]
    assert learner.metric("tagloop_corpus_rows", source="feedback") == 250
    assert learner.stop() == 0


def poisoned(rows: list[tuple[str, list[str]]], vocabulary: list[str]) -> list[Feedback]:
    """Label flipping: python titles tagged java (and vice versa), every other tag shifted."""
    flip = {tag: vocabulary[(i + 1) % len(vocabulary)] for i, tag in enumerate(vocabulary)}
    flip |= {"python": "java", "java": "python"}
    return [
        Feedback(
            title=title, tags=sorted({flip.get(t, t) for t in tags}), feedback_id=f"poison-{i}"
        )
        for i, (title, tags) in enumerate(rows)
    ]


def test_a_poisoned_candidate_is_rejected_and_nothing_changes_for_replicas(
    learner_stack: LearnerStack, feedback_rows: list[tuple[str, list[str]]]
):
    updates = learner_stack.subscribe_updates()
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    bootstrap = learner.get("/api/status")["current_version"]
    wait_until(lambda: pull_updates(learner_stack.bus, updates), what="bootstrap broadcast")
    vocabulary = sorted({tag for _, tags in feedback_rows for tag in tags})

    publish(
        learner_stack.bus, learner_stack.feedback_topic, poisoned(feedback_rows[:1000], vocabulary)
    )
    wait_until(lambda: learner.get("/api/status")["corpus"]["feedback_rows"] == 1000, timeout=30)
    answer = learner.post("/api/retrain")
    assert answer.status_code == 202 and answer.json()["scheduled"] is True

    def decided() -> dict:
        status = learner.get("/api/status")
        last = status["last_decision"] or {}
        return status if last.get("version") not in (None, bootstrap) else {}

    status = wait_until(decided, timeout=60, what="the poisoned candidate's decision")
    candidate = status["last_decision"]
    assert candidate["promoted"] is False
    assert "f1_macro_budget" in candidate["reason"] and "below the best" in candidate["reason"]
    assert status["current_version"] == bootstrap
    assert learner_stack.registry.current_version() == bootstrap
    stored = learner_stack.registry.get_metadata(candidate["version"])
    assert stored["decision"]["promoted"] is False
    assert stored["decision"]["reason"] == candidate["reason"]
    assert stored["decision"]["compared_with"] == bootstrap
    # Each rule's verdict is recorded in the registry and shown in /api/status.
    verdicts = {v["rule"]: v["passed"] for v in stored["decision"]["rules"]}
    assert verdicts.keys() == {"f1_macro_budget", "tag_floor", "new_tag_floor", "validated_budget"}
    assert verdicts["f1_macro_budget"] is False
    assert candidate["rules"] == stored["decision"]["rules"]
    assert stored["trigger"] == "retrain" and stored["parent_version"] == bootstrap
    assert pull_updates(learner_stack.bus, updates) == []  # no broadcast
    assert learner.metric("tagloop_model_rejections_total", reason="f1_macro_budget") == 1
    assert learner.metric("tagloop_model_info", version=bootstrap) == 1

    # An operator may still roll forward to it deliberately, and back again; both are announced.
    for version in (candidate["version"], bootstrap):
        answer = learner.post(f"/api/models/{version}/promote")
        assert answer.status_code == 200, answer.text
        assert answer.json()["decision"]["promoted"] is True
        assert learner_stack.registry.current_version() == version
        assert learner.get("/api/status")["current_version"] == version
    announced = wait_until(lambda: pull_updates(learner_stack.bus, updates), what="broadcasts")
    assert [u.version for u in announced][-1] == bootstrap
    listed = learner.get("/api/models")
    assert listed["current_version"] == bootstrap
    assert [m["version"] for m in listed["models"]] == [candidate["version"], bootstrap]
    assert listed["models"][0]["decision"]["reason"] == "manual promotion"
    assert learner.metric("tagloop_model_promotions_total", reason="manual") == 2
    assert learner.stop() == 0


GOOD = {"title": "How to merge two dicts in Python?", "tags": ["python"], "feedback_id": "good"}
FEEDBACK = {"schema": "tagloop.feedback.v1"}
BAD_PAYLOADS = {
    "not JSON": (b"{'title': 'python dict'", FEEDBACK, "not_json"),
    "not UTF-8": (b'{"title": "\xff\xfe"}', FEEDBACK, "not_json"),
    "not an object": (json.dumps([GOOD]).encode(), FEEDBACK, "wrong_type"),
    "title of the wrong type": (json.dumps({**GOOD, "title": 42}).encode(), FEEDBACK, "wrong_type"),
    "tags of the wrong type": (
        json.dumps({**GOOD, "tags": "python"}).encode(),
        FEEDBACK,
        "wrong_type",
    ),
    "missing title": (json.dumps({"tags": ["python"]}).encode(), FEEDBACK, "wrong_type"),
    "missing tags": (json.dumps({"title": "x"}).encode(), FEEDBACK, "wrong_type"),
    "huge title": (json.dumps({**GOOD, "title": "a" * 5000}).encode(), FEEDBACK, "title_too_long"),
    "huge payload": (json.dumps({**GOOD, "x": "a" * 70_000}).encode(), FEEDBACK, "too_large"),
    "empty title": (json.dumps({**GOOD, "title": "  "}).encode(), FEEDBACK, "empty_title"),
    "empty tags": (json.dumps({**GOOD, "tags": []}).encode(), FEEDBACK, "no_tags"),
    "invalid tag": (json.dumps({**GOOD, "tags": ["no/slashes"]}).encode(), FEEDBACK, "invalid_tag"),
    "too many tags": (
        json.dumps({**GOOD, "tags": [f"tag{i}" for i in range(11)]}).encode(),
        FEEDBACK,
        "too_many_tags",
    ),
    "control characters in the id": (
        json.dumps({**GOOD, "feedback_id": "a\nb"}).encode(),
        FEEDBACK,
        "bad_feedback_id",
    ),
    "unknown schema": (
        json.dumps(GOOD).encode(),
        {"schema": "tagloop.feedback.v9"},
        "unknown_schema",
    ),
    "no schema": (json.dumps(GOOD).encode(), {}, "unknown_schema"),
}


def test_every_bad_payload_is_acked_logged_counted_and_the_learner_keeps_going(
    learner_stack: LearnerStack,
):
    learner_stack.subscribe_learner()
    learner = learner_stack.learner().start(ready=False)
    path = learner_stack.bus.topic_path(learner_stack.feedback_topic)
    for data, attributes, _ in BAD_PAYLOADS.values():
        learner_stack.bus.publisher.publish(path, data, **attributes).result(timeout=10)
    learner_stack.bus.publish(learner_stack.feedback_topic, Feedback.from_dict(GOOD))

    expected: dict[str, int] = {}
    for _, _, reason in BAD_PAYLOADS.values():
        expected[reason] = expected.get(reason, 0) + 1

    def handled() -> str:
        text = learner.get("/metrics")
        rejected = sum(metric(text, "tagloop_feedback_rejected_total", reason=r) for r in expected)
        done = rejected + metric(text, "tagloop_feedback_accepted_total") >= len(BAD_PAYLOADS) + 1
        return text if done else ""

    text = wait_until(handled, timeout=60, what="every message handled")
    counted = {r: metric(text, "tagloop_feedback_rejected_total", reason=r) for r in expected}
    assert counted == expected
    assert metric(text, "tagloop_feedback_accepted_total") == 1
    assert learner.get("/healthz") == {"status": "ok"}
    status = learner.get("/api/status")
    assert status["corpus"]["feedback_rows"] == 1

    rejects = [json.loads(line) for line in (learner_stack.data_dir / "rejects.jsonl").open()]
    assert sorted(r["reason"] for r in rejects) == sorted(r for _, _, r in BAD_PAYLOADS.values())
    assert all(r["detail"] and r["message_id"] and r["data_base64"] is not None for r in rejects)
    logged = [json.loads(line) for line in learner.output().splitlines() if line.startswith("{")]
    logged_reasons = [e["reason"] for e in logged if e["message"].startswith("rejected message")]
    assert sorted(logged_reasons) == sorted(r for _, _, r in BAD_PAYLOADS.values())
    assert learner.stop() == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("TAGLOOP_REFIT_EVERY", "often"), ("TAGLOOP_TRAIN_DATA", "/nonexistent/train.tsv")],
)
def test_a_bad_setting_stops_the_start_with_a_message_naming_it(
    name: str, value: str, tmp_path: Path
):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tagloop"), "serve", "learning", "--port", "0"],
        env={**os.environ, "TAGLOOP_DATA_DIR": str(tmp_path), name: value},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert value in result.stderr.decode() or name in result.stderr.decode()
