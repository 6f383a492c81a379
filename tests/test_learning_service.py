"""The learner as `tagloop serve learning` against the emulator and SeaweedFS."""

from __future__ import annotations

import pytest

from tagloop.bus import Bus
from tagloop.data import load_labeled
from tagloop.messages import Feedback, ModelUpdate, parse_model_update
from tests.fixtures.learning import DATA_DIR, LearnerProcess, LearnerStack
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
    learner = learner_stack.learner(TAGLOOP_PROMOTION_TOLERANCE="1.0").start()
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
    assert learner.stop() == 0
