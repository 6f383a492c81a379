"""Real replicas (`tagloop serve inference`, gunicorn) against the Pub/Sub emulator and SeaweedFS.

Model versions are published the way the learner does it (registry, then
current.json, then a broadcast) by `ModelPublisher`; every test leaves the
module's replica serving the registry's current version.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from inference_service.app import create_app
from inference_service.config import InferenceSettings
from inference_service.runtime import Runtime
from tagloop.channels.bus import Bus
from tagloop.domain.messages import FEEDBACK_SCHEMA
from tagloop.web.annotators import address_annotator
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import InferenceSetup, ModelPublisher, Replica, inference_setup
from tests.fixtures.keys import model_signer
from tests.fixtures.pubsub import free_port, unique_project
from tests.fixtures.ui import start_ui
from tests.fixtures.wait import wait_until

SWITCH_SECONDS = 5.0
V1_KEYS = {"feedback_id", "title", "tags", "predicted_tags", "model_version", "submitted_at"}
FEEDBACK_KEYS = V1_KEYS | {"annotator"}  # the optional extension, set by the edge


@pytest.fixture(scope="module")
def main(
    s3_server: S3Server,
    pubsub_emulator: str,
    model_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InferenceSetup]:
    """Two workers, the default (long) reconcile period: only broadcasts move it quickly."""
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        tmp_path_factory.mktemp("cache"),
        TAGLOOP_WORKERS="2",
        TAGLOOP_THREADS="4",
        TAGLOOP_FEEDBACK_RATE="0.01",
        TAGLOOP_FEEDBACK_BURST="3",
    ) as setup:
        yield setup


def current(setup: InferenceSetup) -> str | None:
    return setup.publisher.registry.current_version()


def wait_all_workers(replica: Replica, version: str, timeout: float = SWITCH_SECONDS) -> None:
    wait_until(
        lambda: replica.all_workers_serve(version),
        timeout=timeout,
        what=f"every worker serving {version}",
    )


def test_replica_becomes_ready_from_current_json(main):
    replica = main.replica
    assert replica.get("/readyz").json()["model_version"] == current(main)
    assert replica.served_version() == current(main)
    # Each of the two workers loads the promoted version by itself at start-up.
    wait_until(
        lambda: replica.metric("tagloop_inference_model_reloads_total", trigger="startup") == 2,
        what="both workers loaded",
    )
    assert main.version is not None and (main.cache_dir / main.version / "model.npz").is_file()


def test_broadcast_switches_every_worker_within_5_seconds(main):
    version = main.publisher.publish()
    wait_all_workers(main.replica, version)
    assert main.replica.served_version() == version
    prediction = main.replica.post("/api/predict", json={"title": "numpy array reshape"})
    assert prediction.json()["model_version"] == version


def test_no_request_fails_during_three_reloads(main):
    stop = threading.Event()
    failures: list[str] = []
    served: Counter[str] = Counter()
    lock = threading.Lock()
    titles = ["How to sort a list in Python?", "jQuery ajax post json", "C# async await deadlock"]

    def hammer() -> None:
        with requests.Session() as session:  # keep-alive, as the UI's proxy does
            while not stop.is_set():
                for title in titles:
                    try:
                        response = session.post(
                            main.replica.base_url + "/api/predict", json={"title": title}, timeout=5
                        )
                        body = response.json()
                        ok = response.status_code == 200 and body["tags"]
                    except (requests.RequestException, ValueError, KeyError) as error:
                        ok, body = False, {"error": repr(error)}
                    with lock:
                        if ok:
                            served[body["model_version"]] += 1
                        else:
                            failures.append(f"{response.status_code}: {body}")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(served.values()) > 50, what="load running")
        versions = []
        for _ in range(3):
            versions.append(main.publisher.publish())
            wait_all_workers(main.replica, versions[-1])
            seen = sum(served.values())
            wait_until(lambda seen=seen: sum(served.values()) > seen + 50, what="load continues")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert all(served[version] > 0 for version in versions), served


def test_older_broadcast_is_ignored_unless_it_is_a_rollback(main):
    replica, publisher = main.replica, main.publisher
    older = current(main)
    assert older is not None
    newer = publisher.publish()
    wait_all_workers(replica, newer)

    ignored = replica.metric("tagloop_inference_model_updates_received_total", outcome="older")
    publisher.broadcast(older)  # late delivery of an old broadcast
    wait_until(
        lambda: (
            replica.metric("tagloop_inference_model_updates_received_total", outcome="older")
            == ignored + 2
        ),
        what="both workers ignoring the stale update",
    )
    assert replica.all_workers_serve(newer)

    publisher.registry.promote(older)  # an operator rolls back: current.json names it
    publisher.broadcast(older)
    wait_all_workers(replica, older)
    assert replica.metric("tagloop_inference_model_reloads_total", trigger="rollback") == 2


def test_tampered_artifact_is_refused_and_the_old_model_keeps_serving(main):
    replica, publisher = main.replica, main.publisher
    serving = replica.served_version()
    assert serving is not None
    failed = replica.metric("tagloop_inference_model_reload_failures_total", reason="integrity")

    bad = publisher.publish(tamper=True)
    wait_until(
        lambda: (
            replica.metric("tagloop_inference_model_reload_failures_total", reason="integrity")
            >= failed + 2
        ),
        what="both workers refusing the tampered artifact",
    )
    assert replica.all_workers_serve(serving)
    response = replica.post("/api/predict", json={"title": "How do I read a file in Java?"})
    assert response.status_code == 200 and response.json()["model_version"] == serving
    assert not (main.cache_dir / bad).exists(), "unverified bytes never reach the cache"

    good = publisher.publish()  # the next good version is taken as usual
    wait_all_workers(replica, good)


def worker_pids(replica: Replica) -> list[int]:
    pid = replica.process.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_killed_worker_is_replaced_and_its_metrics_retired(main):
    """gunicorn forks a new worker that loads the model itself; the dead worker's gauges
    stop counting (child_exit), so the info metric converges on the new version."""
    replica = main.replica
    started = replica.metric("tagloop_inference_model_reloads_total", trigger="startup")
    victim = worker_pids(replica)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: victim not in worker_pids(replica) and len(worker_pids(replica)) == 2,
        what="the worker replaced",
    )
    wait_until(
        lambda: (
            replica.metric("tagloop_inference_model_reloads_total", trigger="startup")
            == started + 1
        ),
        what="the new worker loading the model",
    )
    version = main.publisher.publish()
    wait_all_workers(replica, version)


def test_feedback_arrives_on_the_learners_subscription(main):
    bus = Bus(main.project)
    try:
        bus.ensure_topic(main.feedback_topic)
        bus.ensure_subscription(main.feedback_topic, "learner")
        body = {
            "title": "  How to draw a stacked dotplot in R?  ",
            "tags": ["R", "ggplot2"],
            "predicted_tags": ["r"],
            "model_version": main.replica.served_version(),
            "feedback_id": "client-chosen-id-1",
            "submitted_at": "2001-01-01T00:00:00Z",  # not the client's to say
        }
        response = main.replica.post(
            "/api/feedback", json=body, headers={"X-Forwarded-For": "192.0.2.10"}
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"feedback_id": "client-chosen-id-1"}
        anonymous = main.replica.post(
            "/api/feedback",
            json={"title": "Java streams", "tags": ["java"]},
            headers={"X-Forwarded-For": "192.0.2.11"},
        )
        assert anonymous.status_code == 202
        assigned = anonymous.json()["feedback_id"]

        received: dict[str, tuple[dict, dict]] = {}

        def pulled_both() -> bool:
            messages = bus.pull("learner", timeout=2.0)
            for message in messages:
                payload = json.loads(message.data)
                received[payload["feedback_id"]] = (payload, message.attributes)
            if messages:
                bus.ack("learner", [m.ack_id for m in messages])
            return len(received) == 2

        wait_until(pulled_both, timeout=10, what="both feedback messages")
        payload, attributes = received["client-chosen-id-1"]
        assert attributes == {"schema": FEEDBACK_SCHEMA}
        assert set(payload) == FEEDBACK_KEYS
        assert payload["title"] == "How to draw a stacked dotplot in R?"
        assert payload["tags"] == ["r", "ggplot2"]
        assert payload["predicted_tags"] == ["r"]
        assert payload["model_version"] == body["model_version"]
        submitted = datetime.fromisoformat(payload["submitted_at"].replace("Z", "+00:00"))
        assert abs(datetime.now(UTC) - submitted) < timedelta(minutes=5)
        assert received[assigned][0]["model_version"] is None
        assert received[assigned][0]["annotator"] == address_annotator("192.0.2.11")
    finally:
        bus.close()
    assert main.replica.metric("tagloop_inference_feedback_published_total") >= 2


def test_feedback_flood_is_rate_limited_per_client(main):
    flood = {"X-Forwarded-For": "192.0.2.66"}
    statuses = Counter()
    retry_after = set()
    for _ in range(12):
        response = main.replica.post("/api/feedback", json={"title": "x"}, headers=flood)
        statuses[response.status_code] += 1
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limited"
            retry_after.add(int(response.headers["Retry-After"]))
    # burst 3 for the whole replica (its 2 workers share the buckets): 3 reached validation
    assert statuses == {422: 3, 429: 9}, statuses
    assert min(retry_after) >= 1
    assert main.replica.metric("tagloop_inference_feedback_rate_limited_total") >= 9


def test_through_the_ui_a_flood_gets_no_more_than_the_limit(main):
    """Issue 11, reproduction 9: 100 instant corrections through the UI, burst 3 per client."""
    with start_ui([main.replica.base_url], TAGLOOP_WORKERS="2") as ui:
        session = requests.Session()
        statuses = Counter(
            session.post(ui.base_url + "/api/feedback", json={"title": "x"}, timeout=10).status_code
            for _ in range(100)
        )
    assert statuses[429] >= 97 and set(statuses) <= {422, 429}, statuses


def test_a_client_cannot_choose_its_address_unless_the_peer_is_a_trusted_proxy(
    s3_server, pubsub_emulator, model_bundle, tmp_path
):
    """Issue 11, reproduction 9: a new X-Forwarded-For per request, from a peer not trusted."""
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        tmp_path,
        TAGLOOP_FEEDBACK_RATE="0.01",
        TAGLOOP_FEEDBACK_BURST="3",
        TAGLOOP_TRUSTED_PROXY_NETWORKS="192.0.2.0/24",
    ) as setup:
        statuses = Counter(
            setup.replica.post(
                "/api/feedback", json={"title": "x"}, headers={"X-Forwarded-For": f"198.51.100.{i}"}
            ).status_code
            for i in range(100)
        )
    assert statuses == {422: 3, 429: 97}, statuses


def test_metrics_cover_predictions_and_requests(main):
    replica = main.replica
    version = replica.served_version()
    assert version is not None
    replica.post("/api/predict", json={"titles": ["a b c", "python pandas dataframe"]})
    predictions = replica.metric(
        "tagloop_inference_predictions_total", model_version=version, stage="full"
    )
    assert predictions >= 2
    assert replica.metric("tagloop_inference_tags_per_prediction_count") >= 2
    assert (
        replica.metric(
            "tagloop_http_requests_total", endpoint="/api/predict", method="POST", status="200"
        )
        >= 1
    )
    assert (
        replica.metric(
            "tagloop_http_request_duration_seconds_count", endpoint="/api/predict", method="POST"
        )
        >= 1
    )
    assert replica.metric("tagloop_inference_model_loaded_timestamp_seconds", version=version) > 0


def test_reconciliation_picks_up_versions_never_broadcast(
    s3_server, pubsub_emulator, model_bundle, tmp_path
):
    """Starts before any model exists (not ready), then follows current.json alone."""
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        tmp_path / "cache",
        publish_first=False,
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="1",
    ) as setup:
        replica, publisher = setup.replica, setup.publisher
        assert replica.get("/readyz").status_code == 503
        assert replica.post("/api/predict", json={"title": "x"}).status_code == 503

        first = publisher.publish(broadcast=False)
        wait_until(replica.ready, timeout=10, what="ready from current.json")
        assert replica.served_version() == first
        second = publisher.publish(broadcast=False)
        wait_until(lambda: replica.served_version() == second, timeout=5, what="reconciled")
        assert replica.metric("tagloop_inference_model_reloads_total", trigger="reconcile") == 1

        subscriptions = [
            path
            for path in publisher.bus.subscriber.list_subscriptions(
                project=f"projects/{setup.project}"
            )
        ]
        assert len(subscriptions) == 1 and "/subscriptions/inference-" in subscriptions[0].name
        assert replica.stop() == 0
        remaining = publisher.bus.subscriber.list_subscriptions(project=f"projects/{setup.project}")
        assert list(remaining) == [], "a clean shutdown deletes the worker's subscription"


# Closing the client at the end aborts the publisher's background retries of the
# undeliverable message, which its commit thread reports as an exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_without_pubsub_the_model_loads_and_feedback_is_503(
    s3_server, registry, model_bundle, tmp_path, monkeypatch
):
    """In-process worker runtime (no gunicorn) with the real client aimed at a dead emulator:
    the model still comes from the registry, predictions work, feedback is refused."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens
    project = unique_project("inference")
    signed = s3_server.registry(registry.bucket, signer=model_signer())
    version = ModelPublisher(signed, Bus(project), "model-updates", model_bundle).publish(
        broadcast=False
    )
    settings = InferenceSettings.from_env(
        {
            **os.environ,
            "TAGLOOP_GCP_PROJECT": project,
            "TAGLOOP_S3_BUCKET": registry.bucket,
            "TAGLOOP_MODEL_CACHE_DIR": str(tmp_path / "cache"),
            "TAGLOOP_PUBLISH_TIMEOUT_SECONDS": "1",
        }
    )
    runtime = Runtime(settings)
    client = create_app(settings, runtime).test_client()
    runtime.start()
    try:
        wait_until(lambda: runtime.holder.current, timeout=10, what="model loaded")
        prediction = client.post("/api/predict", json={"title": "python list"})
        assert prediction.status_code == 200
        assert prediction.get_json()["model_version"] == version
        response = client.post("/api/feedback", json={"title": "python", "tags": ["python"]})
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "publish_failed"
        failures = [
            sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "tagloop_inference_feedback_publish_failures_total"
        ]
        assert failures and failures[0] >= 1
    finally:
        runtime.stop()
        wait_until(
            lambda: not [t for t in threading.enumerate() if "CommitBatchPublisher" in t.name],
            timeout=30,
            what="the publisher's retry thread to end (inside this test)",
        )
