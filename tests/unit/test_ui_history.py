"""The UI's model history routes against a stub learner on a free port.

The stub answers what a real learner could not (malformed ids, markup,
non-finite numbers, crashes) so the boundary checks are seen at work; the
browser test (tests/e2e/test_history_browser.py) drives a real learner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from frontend.app import create_app
from frontend.history import model_entry
from frontend.rollout_view import rollout_view
from frontend.settings import UISettings
from tagloop.domain.rollout import Stage
from tagloop.settings import ConfigError
from tests.fixtures.pubsub import free_port
from tests.fixtures.ui import serve_in_thread

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


def stage_record(name: str, stage: str, reason: str = "evidence", **extra: Any) -> dict[str, Any]:
    return {
        "version": name,
        "sha256": "0" * 64,
        "base_version": MID,
        "stage": stage,
        "canary_fraction": 0.1,
        "reason": reason,
        "issued_at": "2026-11-03T01:00:00Z",
        **extra,
    }


def rollout_status(name: str, stage: str) -> dict[str, Any]:
    """What the learner's GET /api/rollout answers for `name` in `stage`."""
    history = [
        stage_record(name, "shadow", "passed the gate: shadow first"),
        stage_record(name, stage, "200 corrections in shadow, agreement 0.910"),
    ]
    return {
        "enabled": True,
        "settings": {"enabled": True},
        "rollout": history[-1],
        "evidence": {
            "corrections": 12,
            "agreement": 0.875,
            "base": {"precision": 0.5, "recall": 0.4},
            "candidate": {"precision": 0.625, "recall": None},
        },
        "history": history,
    }


@dataclass
class StubLearner:
    """The learner's /api/models, promote and rollout routes, with a settable answer and a record of calls."""

    current: str = MID
    models: list[Any] = field(
        default_factory=lambda: [version(NEW, False), version(MID, True), version(OLD, True)]
    )
    status: int = 200
    rollout: Any = field(default_factory=lambda: rollout_status(NEW, "canary"))
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

        @app.get("/api/rollout")
        def rollout() -> Any:
            self.calls.append(("GET", request.path, request.headers.get("Authorization")))
            if self.status != 200:
                return jsonify(error={"code": "x", "message": "learner trouble"}), self.status
            return jsonify(self.rollout)

        @app.get("/api/models/<name>/stages")
        def stages(name: str) -> Any:
            self.calls.append(("GET", request.path, request.headers.get("Authorization")))
            return jsonify(version=name, stages=self.rollout["history"])

        @app.post("/api/models/<name>/stage")
        def stage(name: str) -> Any:
            self.calls.append(("POST", request.path, request.headers.get("Authorization")))
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return jsonify(error={"code": "unauthorized", "message": "bad token"}), 401
            if name != self.rollout["rollout"]["version"]:
                return jsonify(error={"code": "stage_conflict", "message": "not in rollout"}), 409
            body = request.get_json()
            return jsonify(stage_record(name, body["stage"], body["reason"]))

        return app


@pytest.fixture
def learner() -> Iterator[tuple[StubLearner, str]]:
    stub = StubLearner()
    with serve_in_thread(stub.app()) as url:
        yield stub, url


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


def test_rollout_lists_the_candidate_its_evidence_and_each_stage_change(
    learner: tuple[StubLearner, str],
) -> None:
    stub, url = learner
    body = ui(url).get("/ui/rollout").get_json()
    assert body["enabled"] is True
    assert body["rollout"] == {
        "version": NEW,
        "base_version": MID,
        "stage": "canary",
        "canary_fraction": 0.1,
        "reason": "200 corrections in shadow, agreement 0.910",
        "issued_at": "2026-11-03T01:00:00Z",
    }
    assert body["evidence"] == {
        "corrections": 12,
        "agreement": 0.875,
        "base": {"precision": 0.5, "recall": 0.4},
        "candidate": {"precision": 0.625, "recall": None},
    }
    assert [(entry["stage"], entry["reason"]) for entry in body["history"]] == [
        ("shadow", "passed the gate: shadow first"),
        ("canary", "200 corrections in shadow, agreement 0.910"),
    ]
    stages = ui(url).get(f"/ui/models/{NEW}/stages").get_json()
    assert stages["version"] == NEW and stages["stages"] == body["history"]
    assert stub.calls == [("GET", "/api/rollout", None), ("GET", f"/api/models/{NEW}/stages", None)]


def test_no_rollout_yet_is_an_empty_view(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    stub.rollout = {
        "enabled": False,
        "settings": {},
        "rollout": None,
        "evidence": None,
        "history": [],
    }
    body = ui(url).get("/ui/rollout").get_json()
    assert body == {"enabled": False, "rollout": None, "evidence": None, "history": []}


def test_hostile_rollout_answers_are_filtered(learner: tuple[StubLearner, str]) -> None:
    stub, url = learner
    stub.rollout = {
        "enabled": "yes",
        "rollout": stage_record(NEW, "canary", "<img src=x>" * 100, canary_fraction=float("nan")),
        "evidence": {
            "corrections": True,
            "agreement": 7.5,
            "base": "x",
            "candidate": {"precision": float("-inf"), "recall": 0.25},
        },
        "history": [
            stage_record("../" + NEW, "shadow"),
            stage_record(NEW, "deployed"),
            [],
            stage_record(NEW, "shadow", base_version="<b>", issued_at=7),
            *[stage_record(NEW, "canary")] * 80,
        ],
    }
    body = ui(url).get("/ui/rollout").get_json()
    assert body["enabled"] is False
    assert len(body["rollout"]["reason"]) == 300 and body["rollout"]["canary_fraction"] is None
    assert body["evidence"] == {
        "corrections": None,
        "agreement": None,
        "base": {"precision": None, "recall": None},
        "candidate": {"precision": None, "recall": 0.25},
    }
    assert len(body["history"]) == 50 and all(e["stage"] == "canary" for e in body["history"])
    stub.rollout = {"rollout": stage_record(NEW, "promoted"), "evidence": {}, "history": []}
    assert ui(url).get("/ui/rollout").get_json()["rollout"] is None


STAGE_RECORDS = st.dictionaries(
    st.sampled_from(["version", "base_version", "stage", "canary_fraction", "reason", "issued_at"])
    | st.text(max_size=10),
    JSON_VALUES | st.sampled_from([NEW, "canary", "rolled_back"]),
)


@given(STAGE_RECORDS, JSON_VALUES)
def test_any_rollout_answer_gives_a_well_formed_view(record: dict[str, Any], evidence: Any) -> None:
    view = rollout_view({"rollout": record, "evidence": evidence, "history": [record, evidence]})
    if view["rollout"] is None:
        assert view["evidence"] is None and view["history"] == []
        return
    entry = view["rollout"]
    assert entry["version"] == NEW and entry["stage"] in {str(stage) for stage in Stage}
    fraction = entry["canary_fraction"]
    assert fraction is None or 0.0 <= fraction <= 1.0
    for text in (entry["reason"], entry["issued_at"]):
        assert text is None or len(text) <= 300
    assert view["history"] == [entry]


def test_advance_and_roll_back_the_candidate_with_the_token(
    learner: tuple[StubLearner, str],
) -> None:
    stub, url = learner
    before = learner_calls("stage", "ok")
    answer = ui(url).post(f"/ui/models/{NEW}/stage", json={"stage": "full"}, headers=bearer())
    assert answer.status_code == 200, answer.data
    assert answer.get_json()["stage"] == "full"
    assert answer.get_json()["reason"] == "set by an operator on the model history page"
    back = ui(url).post(f"/ui/models/{NEW}/stage", json={"stage": "rolled_back"}, headers=bearer())
    assert back.get_json()["stage"] == "rolled_back"
    assert learner_calls("stage", "ok") == before + 2
    other = ui(url).post(f"/ui/models/{OLD}/stage", json={"stage": "full"}, headers=bearer())
    assert (other.status_code, other.get_json()["error"]["code"]) == (409, "conflict")
    wrong = ui(url).post(f"/ui/models/{NEW}/stage", json={"stage": "full"}, headers=bearer("no"))
    assert wrong.status_code == 401
    assert [call[2] for call in stub.calls] == [f"Bearer {TOKEN}"] * 3 + ["Bearer no"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        (f"/ui/models/{NEW}/stage", {"stage": "full"}, {}, 401, "admin_token_required"),
        (f"/ui/models/{NEW}/stage", {"stage": "deployed"}, bearer(), 422, "bad_stage"),
        (f"/ui/models/{NEW}/stage", ["full"], bearer(), 422, "bad_stage"),
        (f"/ui/models/{NEW}/stage", {"stage": 1}, bearer(), 422, "bad_stage"),
        ("/ui/models/x/stage", {"stage": "full"}, bearer(), 400, "invalid_version"),
        ("/ui/models/..%2fretrain/stage", {"stage": "full"}, bearer(), 404, "not_found"),
    ],
)
def test_bad_stage_requests_never_reach_the_learner(
    learner: tuple[StubLearner, str],
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    stub, url = learner
    answer = ui(url).post(path, json=body, headers=headers)
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)
    assert stub.calls == []
    assert ui(url).get("/ui/models/x/stages").status_code == 400


@pytest.mark.parametrize(
    ("learner_status", "status", "code"),
    [(500, 502, "learner_failed"), (503, 503, "learner_unavailable")],
)
def test_rollout_learner_failures_are_502_or_503_and_counted(
    learner: tuple[StubLearner, str], learner_status: int, status: int, code: str
) -> None:
    stub, url = learner
    stub.status = learner_status
    outcome = "failed" if status == 502 else "unavailable"
    before = learner_calls("rollout", outcome)
    answer = ui(url).get("/ui/rollout")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (status, code)
    assert learner_calls("rollout", outcome) == before + 1
