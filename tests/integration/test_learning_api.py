"""The learner's HTTP API in-process (Flask test client): auth, errors, health, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from learning_service.app import create_app
from learning_service.config import LearnerSettings
from learning_service.learner import Learner
from learning_service.store import FeedbackStore, StoredFeedback
from tagloop.channels.bus import Bus
from tagloop.channels.registry import Registry
from tagloop.domain.messages import Feedback, utc_now
from tests.fixtures.learning import ADMIN_TOKEN, LearningCorpus
from tests.fixtures.pubsub import free_port

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MakeClient = Callable[..., FlaskClient]


def json_of(response: TestResponse) -> Any:
    """The answer's JSON body; the test fails here when there is none."""
    body = response.json
    assert body is not None, response.data
    return body


@pytest.fixture
def make_client(learning_corpus: LearningCorpus, tmp_path: Path) -> Iterator[MakeClient]:
    """A test client on a learner that is built but not started (no background threads)."""
    learners: list[Learner] = []
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: dependencies are down

    def make(**env: str) -> FlaskClient:
        settings = LearnerSettings.from_env(
            {
                "PUBSUB_EMULATOR_HOST": dead,
                "TAGLOOP_S3_ENDPOINT_URL": f"http://{dead}",
                "TAGLOOP_DATA_DIR": str(tmp_path / f"learner-{len(learners)}"),
                "TAGLOOP_TRAIN_DATA": str(learning_corpus.train),
                "TAGLOOP_TEST_DATA": str(learning_corpus.test),
                "TAGLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
                **env,
            }
        )
        s3 = settings.common
        registry = Registry(
            s3.s3_bucket,
            endpoint_url=s3.s3_endpoint_url,
            access_key=env.get("AWS_ACCESS_KEY_ID", "x"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", "x"),
            max_attempts=1,
        )
        learner = Learner(settings, Bus(settings.common.gcp_project), registry)
        learners.append(learner)
        return create_app(learner).test_client()

    yield make
    for learner in learners:
        learner.stop(timeout=1)


def test_health_status_and_metrics_answer_before_anything_is_connected(make_client: MakeClient):
    client = make_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json == {"status": "ok"}
    assert health.headers["X-Content-Type-Options"] == "nosniff"

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json == {
        "ready": False,
        "checks": {"registry": False, "model": False, "pubsub": False},
        "reasons": {},  # nothing permanent: not connected yet
    }

    status = json_of(client.get("/api/status"))
    assert status["current_version"] is None
    assert status["corpus"] == {"bootstrap_rows": 3000, "test_rows": 1000, "feedback_rows": 0}
    assert status["refit_every"] == 100 and status["fit_in_progress"] is False

    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.get_data(as_text=True)
    assert 'tagloop_corpus_rows{source="bootstrap"} 3000.0' in text
    assert "tagloop_http_requests_total{" in text


def test_admin_endpoints_are_disabled_without_a_configured_token(make_client: MakeClient):
    client = make_client(TAGLOOP_ADMIN_TOKEN="")
    for path in ("/api/retrain", "/api/models/v1/promote"):
        answer = client.post(path, headers=AUTH)
        assert answer.status_code == 403
        assert json_of(answer)["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": ADMIN_TOKEN}],
)
def test_admin_endpoints_need_the_bearer_token(make_client: MakeClient, headers: dict[str, str]):
    answer = make_client().post("/api/retrain", headers=headers)
    assert answer.status_code == 401
    assert json_of(answer)["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_retrain_before_the_registry_was_reached_is_503(make_client: MakeClient):
    answer = make_client().post("/api/retrain", headers=AUTH)
    assert answer.status_code == 503 and json_of(answer)["error"]["code"] == "not_ready"


def test_an_unusable_version_name_is_400(make_client: MakeClient):
    answer = make_client().post("/api/models/..%2e/promote", headers=AUTH)
    assert answer.status_code == 400
    assert json_of(answer)["error"]["code"] == "invalid_version"


def test_registry_outage_is_503_with_retry_after(make_client: MakeClient):
    client = make_client()
    for answer in (
        client.get("/api/models"),
        client.post("/api/models/20260101T000000000Z-abcdef/promote", headers=AUTH),
    ):
        assert answer.status_code == 503
        assert json_of(answer)["error"]["code"] == "registry_unavailable"
        assert answer.headers["Retry-After"] == "5"


def test_unknown_version_is_404(make_client: MakeClient, registry: Registry, s3_server):
    client = make_client(
        TAGLOOP_S3_ENDPOINT_URL=s3_server.endpoint_url,
        TAGLOOP_S3_BUCKET=registry.bucket,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
    )
    answer = client.post("/api/models/20260101T000000000Z-abcdef/promote", headers=AUTH)
    assert answer.status_code == 404
    assert json_of(answer)["error"]["code"] == "version_not_found"
    assert client.get("/api/models").json == {"current_version": None, "models": []}


def test_routing_errors_are_json(make_client: MakeClient):
    client = make_client()
    assert json_of(client.get("/nope"))["error"]["code"] == "not_found"
    wrong_method = client.get("/api/retrain")
    assert wrong_method.status_code == 405 and json_of(wrong_method)["error"]["code"]


def test_second_opinions_list_titles_one_other_annotator_corrected(
    make_client: MakeClient, tmp_path: Path
):
    store = FeedbackStore(tmp_path / "learner-0" / "feedback.csv")  # read back at start-up
    store.append(
        [
            StoredFeedback.from_feedback(
                Feedback.from_dict({"title": title, "tags": ["python"], "annotator": who}),
                utc_now(),
            )
            for title, who in [("Only a", "anon:a"), ("Both", "anon:a"), ("Both", "anon:b")]
        ]
    )
    store.close()
    client = make_client()
    assert json_of(client.get("/api/second-opinions?annotator=anon:b")) == {"items": ["Only a"]}
    assert json_of(client.get("/api/second-opinions?annotator=anon:a")) == {"items": []}
    assert json_of(client.get("/api/second-opinions?limit=1")) == {"items": ["Only a"]}
    for path in (
        "/api/second-opinions?limit=0",
        "/api/second-opinions?limit=101",
        "/api/second-opinions?limit=%C2%B2",
        "/api/second-opinions?limit=" + "9" * 5000,
        "/api/second-opinions?annotator=a%20b",
        "/api/second-opinions?annotator=" + "a" * 129,
    ):
        answer = client.get(path)
        assert answer.status_code == 400, path
        assert json_of(answer)["error"]["code"] == "invalid_query"
