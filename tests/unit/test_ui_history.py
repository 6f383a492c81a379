"""The UI's model history routes against a stub learner on a free port.

The stub answers what a real learner could not (malformed ids, markup,
non-finite numbers, crashes) so the boundary checks are seen at work; the
browser test (tests/e2e/test_history_browser.py) drives a real learner.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from werkzeug.serving import make_server

from frontend.app import create_app
from frontend.history import model_entry
from frontend.settings import UISettings
from tagloop.settings import ConfigError
from tests.fixtures.pubsub import free_port

TOKEN = "learner-admin-token-0123"
OLD, MID, NEW = (
    "20261101T000000000Z-aaaaaa",
    "20261102T000000000Z-bbbbbb",
    "20261103T000000000Z-cccccc",
)


def version(name: str, promoted: bool, **extra: Any) -> dict[str, Any]:
    return {
        "version": name,
        "created_at": f"{name[:4]}-{name[4:6]}-{name[6:8]}T00:00:00Z",
        "training_rows": 3000,
        "metrics": {"f1_macro": 0.5, "f1_micro": 0.6, "accuracy": 0.3, "secret": 1},
        "decision": {"promoted": promoted, "reason": "gate says so"},
        "sha256": "0" * 64,
        **extra,
    }


@dataclass
class StubLearner:
    """The learner's /api/models and promote, with a settable answer and a record of calls."""

    current: str = MID
    models: list[Any] = field(
        default_factory=lambda: [version(NEW, False), version(MID, True), version(OLD, True)]
    )
    status: int = 200
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    def app(self) -> Flask:
        app = Flask("stub-learner")

        @app.get("/api/models")
        def models() -> Any:
            self.calls.append(("GET", request.path, request.headers.get("Authorization")))
            if self.status != 200:
                return jsonify(error={"code": "x", "message": "learner trouble"}), self.status
            return jsonify(current_version=self.current, models=self.models)

        @app.post("/api/models/<name>/promote")
        def promote(name: str) -> Any:
            self.calls.append(("POST", request.path, request.headers.get("Authorization")))
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return jsonify(error={"code": "unauthorized", "message": "bad token"}), 401
            self.current = name
            return jsonify(version=name, decision={"promoted": True, "reason": "operator"})

        return app


@pytest.fixture
def learner() -> Iterator[tuple[StubLearner, str]]:
    stub = StubLearner()
    server = make_server("127.0.0.1", 0, stub.app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield stub, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def ui(learner_url: str | None) -> FlaskClient:
    settings = replace(UISettings.from_env({}), learner_url=learner_url)
    return create_app(settings, ["a title"]).test_client()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_learner_url_setting() -> None:
    assert UISettings.from_env({}).learner_url is None
    assert UISettings.from_env({"TAGLOOP_UI_LEARNER_URL": "http://l:8010/"}).learner_url == (
        "http://l:8010"
    )
    assert UISettings.from_env({"TAGLOOP_UI_LEARNER_URL": " "}).learner_url is None
    with pytest.raises(ConfigError, match="TAGLOOP_UI_LEARNER_URL"):
        UISettings.from_env({"TAGLOOP_UI_LEARNER_URL": "learner:8010"})


def test_the_page_is_served_under_the_strict_csp() -> None:
    page = ui(None).get("/history")
    assert page.status_code == 200 and b'src="/static/history.js"' in page.data
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_history_lists_versions_oldest_first_with_only_known_fields(
    learner: tuple[StubLearner, str],
) -> None:
    stub, url = learner
    body = ui(url).get("/ui/models").get_json()
    assert body["current_version"] == MID
    assert [m["version"] for m in body["models"]] == [OLD, MID, NEW]
    newest = body["models"][-1]
    assert newest["metrics"] == {"f1_macro": 0.5, "f1_micro": 0.6, "accuracy": 0.3}
    assert newest["decision"] == {"promoted": False, "reason": "gate says so"}
    assert newest["stage"] is None and "sha256" not in newest
    assert stub.calls == [("GET", "/api/models", None)]


def test_hostile_learner_answers_are_filtered(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    stub.current = "../../etc/passwd"
    stub.models = [
        version(OLD, True, stage="<script>alert(1)</script>" * 50),
        version("../" + OLD, True),
        "not an object",
        {"version": NEW, "metrics": {"f1_macro": float("inf"), "accuracy": True}, "decision": 3},
    ]
    body = ui(url).get("/ui/models").get_json()
    assert body["current_version"] is None
    assert [m["version"] for m in body["models"]] == [OLD, NEW]
    assert len(body["models"][0]["stage"]) == 300  # text, cut; the page sets it as text
    assert body["models"][1]["metrics"] == {}
    assert body["models"][1]["decision"] == {"promoted": None, "reason": None}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=400),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = st.sampled_from(["version", "metrics", "decision", "stage", "created_at", "training_rows"])


@given(st.dictionaries(FIELDS | st.text(max_size=10), JSON_VALUES), st.booleans())
def test_any_metadata_gives_a_well_formed_entry_or_none(
    metadata: dict[str, Any], with_id: bool
) -> None:
    entry = model_entry({**metadata, "version": OLD} if with_id else metadata)
    if with_id:
        assert entry is not None and entry["version"] == OLD
    if entry is not None:
        assert all(type(value) is float for value in entry["metrics"].values())
        assert entry["decision"]["promoted"] in (True, False, None)
        for text in (entry["stage"], entry["created_at"], entry["decision"]["reason"]):
            assert text is None or (isinstance(text, str) and len(text) <= 300)


def test_promote_passes_the_token_on_and_answers_the_new_current(
    learner: tuple[StubLearner, str],
) -> None:
    stub, url = learner
    answer = ui(url).post(f"/ui/models/{NEW}/promote", headers=bearer())
    assert answer.status_code == 200, answer.data
    assert answer.get_json()["current_version"] == NEW
    assert stub.calls == [("POST", f"/api/models/{NEW}/promote", f"Bearer {TOKEN}")]


def test_rollback_promotes_the_previous_promoted_version(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    answer = ui(url).post("/ui/models/rollback", headers=bearer())
    assert answer.status_code == 200, answer.data
    assert answer.get_json()["current_version"] == OLD and stub.current == OLD
    nothing = ui(url).post("/ui/models/rollback", headers=bearer())
    assert nothing.status_code == 409
    assert nothing.get_json()["error"]["code"] == "nothing_to_roll_back"


def test_a_wrong_token_is_the_learners_401(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    before = learner_calls("rollback", "refused")
    answer = ui(url).post("/ui/models/rollback", headers=bearer("wrong-token"))
    assert answer.status_code == 401
    assert learner_calls("rollback", "refused") == before + 1
    assert answer.get_json()["error"]["code"] == "unauthorized"
    assert stub.current == MID


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (f"/ui/models/{NEW}/promote", {}, 401, "admin_token_required"),
        ("/ui/models/rollback", {"Authorization": "Basic abc"}, 401, "admin_token_required"),
        ("/ui/models/rollback", {"Authorization": "Bearer a b"}, 400, "malformed_token"),
        ("/ui/models/rollback", {"Authorization": "Bearer " + "x" * 600}, 400, "malformed_token"),
        ("/ui/models/..%2f..%2fretrain/promote", bearer(), 404, "not_found"),
        ("/ui/models/20261103T000000000Z-CCCCCC/promote", bearer(), 400, "invalid_version"),
        ("/ui/models/x/promote", bearer(), 400, "invalid_version"),
    ],
)
def test_bad_admin_requests_never_reach_the_learner(
    learner: tuple[StubLearner, str], path: str, headers: dict[str, str], status: int, code: str
) -> None:
    stub, url = learner
    answer = ui(url).post(path, headers=headers)
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)
    assert stub.calls == []


def test_only_the_exact_routes_exist(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    client = ui(url)
    assert client.get(f"/ui/models/{NEW}/promote").status_code == 405
    assert client.post("/ui/models", headers=bearer()).status_code == 405
    assert client.post(f"/ui/models/{NEW}/retrain", headers=bearer()).status_code == 404
    assert client.get("/ui/models/../api/status").status_code == 404
    assert stub.calls == []


@pytest.mark.parametrize(
    ("learner_status", "status", "code"),
    [(500, 502, "learner_failed"), (503, 503, "learner_unavailable")],
)
def test_learner_failures_are_502_or_503(
    learner: tuple[StubLearner, str], learner_status: int, status: int, code: str
) -> None:
    stub, url = learner
    stub.status = learner_status
    answer = ui(url).get("/ui/models")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)


def learner_calls(action: str, outcome: str) -> float:
    labels = {"action": action, "outcome": outcome}
    return REGISTRY.get_sample_value("tagloop_ui_learner_requests_total", labels) or 0.0


def test_an_unreachable_or_missing_learner_is_503() -> None:
    before = learner_calls("list", "unavailable")
    down = ui(f"http://127.0.0.1:{free_port()}").get("/ui/models")
    assert learner_calls("list", "unavailable") == before + 1
    assert (down.status_code, down.get_json()["error"]["code"]) == (503, "learner_unavailable")
    assert down.headers["Retry-After"] == "5"
    missing = ui(None).post("/ui/models/rollback", headers=bearer())
    assert missing.status_code == 503
    assert missing.get_json()["error"]["code"] == "learner_not_configured"
