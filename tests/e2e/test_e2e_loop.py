"""End to end on the real local stack (`tagloop up` on other ports, a temporary var dir).

Corrections go in through the UI's /api/feedback exactly as the browser sends
them; the test then waits for the learner to refit and promote, for both
replicas to serve the new version, and for the metrics to say so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google.cloud import pubsub_v1

from learning_service.rollout import DURING_ROLLOUT
from tests.fixtures.observability import referenced_metrics
from tests.fixtures.pubsub import EMULATORS
from tests.fixtures.stack import (
    REFIT_EVERY,
    StackProcess,
    feedback_rows,
    learner_status,
    loop_env,
    scrape,
    served_version,
    submit,
)
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

CORRECTIONS = 100
CONVERGENCE_SECONDS = 20.0


@pytest.fixture(scope="module", params=EMULATORS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    small_corpus: Path,
) -> Iterator[StackProcess]:
    """The stack on the project's emulator, then on Google's (`tagloop up --pubsub official`)."""
    var = tmp_path_factory.mktemp("e2e") / "var"
    with StackProcess(var, env=loop_env(small_corpus), pubsub=request.param) as up:
        yield up


def versions(stack: StackProcess) -> list[str | None]:
    return [served_version(url) for url in stack.replica_urls]


def test_feedback_through_the_ui_is_learned_and_served_by_both_replicas(
    stack: StackProcess,
) -> None:
    first = learner_status(stack)["current_version"]
    assert first is not None
    wait_until(lambda: versions(stack) == [first, first], timeout=30, what="replicas on v0")
    assert served_version(stack.ui_url) == first

    for title, tags in feedback_rows(REFIT_EVERY):
        answer = submit(stack.ui_url, title, tags)
        assert answer.status_code == 202, answer.text

    new = wait_until(
        lambda: (version := learner_status(stack)["current_version"]) != first and version,
        timeout=90,
        what="the learner to refit and promote",
    )
    wait_until(lambda: versions(stack) == [new, new], timeout=60, what="both replicas on v1")
    assert served_version(stack.ui_url) == new
    assert learner_status(stack)["corpus"]["feedback_rows"] >= REFIT_EVERY

    learner = scrape(stack.learner_url)
    assert learner["tagloop_model_info"][(("version", new),)] == 1
    assert learner["tagloop_feedback_accepted_total"][()] >= REFIT_EVERY
    assert learner["tagloop_fit_duration_seconds_count"][()] >= 2  # bootstrap + refit
    for url in stack.replica_urls:
        assert scrape(url)["tagloop_inference_model_info"][(("version", new),)] == 1


def test_a_hundred_corrections_reach_both_replicas_within_20_seconds(
    stack: StackProcess,
) -> None:
    """Acceptance of issue 14 on both emulators: 100 corrections, then both replicas serve
    a newer model than before within 20 s of the last one."""
    before = learner_status(stack)["current_version"]
    for title, tags in feedback_rows(CORRECTIONS, offset=REFIT_EVERY):
        answer = submit(stack.ui_url, title, tags)
        assert answer.status_code == 202, answer.text
    last_accepted = time.monotonic()

    def converged() -> str | None:
        current = learner_status(stack)["current_version"]
        return current if current != before and versions(stack) == [current, current] else None

    remaining = CONVERGENCE_SECONDS - (time.monotonic() - last_accepted)
    new = wait_until(converged, timeout=remaining, what="both replicas on a new model")
    assert served_version(stack.ui_url) == new


def test_services_expose_every_metric_the_dashboard_and_alerts_query(
    stack: StackProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A malformed message straight onto the topic: the learner must count the rejection.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{stack.ports.pubsub}")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path("tagloop-local", "tag-feedback")
    payload = json.dumps({"title": "no tags and no id"}).encode()
    try:
        publisher.publish(topic, payload, schema="tagloop.feedback.v1").result(timeout=10)
    finally:
        publisher.stop()
    wait_until(
        lambda: scrape(stack.learner_url).get("tagloop_feedback_rejected_total"),
        timeout=30,
        what="the learner to count the rejected message",
    )

    # The drift series of a replica exist from its first prediction (labelled by the model's tags).
    for url in stack.replica_urls:
        answer = requests.post(
            f"{url}/api/predict", json={"title": "Sort a list in Python"}, timeout=10
        )
        assert answer.status_code == 200, answer.text

    exposed: set[str] = set()
    for url in [stack.learner_url, *stack.replica_urls, stack.ui_url]:
        exposed |= set(scrape(url))
    # The candidate-labelled rollout series exist only during a rollout (local stacks run
    # none): tests/unit/test_rollout.py checks that a rollout exports every one of them.
    assert referenced_metrics() - exposed - DURING_ROLLOUT == set()
