"""Staged rollout in-process: the stage machine, the canary split, the record, the replica's
per-request routing. The whole path with real servers is in tests/e2e/test_rollout.py."""

from __future__ import annotations

import json
import random
import string
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from inference_service import metrics as replica_metrics
from inference_service import rollout as replica_rollout
from inference_service.app import create_app
from inference_service.config import InferenceSettings
from inference_service.model_holder import LoadedModel
from inference_service.runtime import Runtime
from learning_service.rollout import DURING_ROLLOUT, RolloutMetrics
from learning_service.rollout_policy import Evidence, RolloutSettings, decide
from tagloop.domain.data import LabeledData
from tagloop.domain.messages import (
    STAGES,
    InvalidMessage,
    ModelUpdate,
    StageChange,
    parse_model_message,
)
from tagloop.domain.model import TagModel
from tagloop.domain.rollout import (
    InvalidRecord,
    RolloutRecord,
    Stage,
    canary_threshold,
    in_canary,
    title_point,
)
from tests.fixtures.model import FitModel
from tests.fixtures.observability import referenced_metrics

POLICY = RolloutSettings(
    enabled=True,
    canary_fraction=0.25,
    shadow_min_corrections=10,
    canary_min_corrections=20,
    min_agreement=0.5,
    precision_tolerance=0.05,
)


def evidence(count: int, base: list[str], candidate: list[str], actual: list[str]) -> Evidence:
    gathered = Evidence()
    for _ in range(count):
        gathered.add(base, candidate, actual)
    return gathered


# --- the stage machine -----------------------------------------------------------------


def test_a_stage_waits_for_its_minimum_of_corrections() -> None:
    assert decide(Stage.SHADOW, evidence(9, ["a"], ["a"], ["a"]), POLICY) is None
    assert decide(Stage.CANARY, evidence(19, ["a"], ["a"], ["a"]), POLICY) is None


def test_an_equal_candidate_advances_shadow_to_canary_to_full() -> None:
    same = evidence(20, ["a", "b"], ["a", "b"], ["a"])
    shadow = decide(Stage.SHADOW, same, POLICY)
    canary = decide(Stage.CANARY, same, POLICY)
    assert shadow is not None and shadow[0] is Stage.CANARY
    assert "agreement 1.000" in shadow[1]
    assert canary is not None and canary[0] is Stage.FULL
    assert "online precision 0.500 vs served 0.500" in canary[1]


def test_a_less_precise_candidate_is_rolled_back_from_either_stage() -> None:
    worse = evidence(20, ["a"], ["a", "z"], ["a"])  # precision 0.5 against 1.0
    for stage in (Stage.SHADOW, Stage.CANARY):
        decision = decide(stage, worse, POLICY)
        assert decision is not None and decision[0] is Stage.ROLLED_BACK
        assert "below the served model's 1.000" in decision[1]


def test_within_the_tolerance_is_not_worse() -> None:
    gathered = Evidence()
    for index in range(20):  # candidate precision 0.95 against 1.0, tolerance 0.05
        gathered.add(["a"], ["a"] if index else ["z"], ["a"])
    decision = decide(Stage.CANARY, gathered, POLICY)
    assert decision is not None and decision[0] is Stage.FULL


def test_shadow_disagreement_rolls_back_even_when_precision_holds() -> None:
    # No user tag matches either model: precision 0 for both, agreement 0.
    decision = decide(Stage.SHADOW, evidence(10, ["a"], ["b"], ["c"]), POLICY)
    assert decision is not None and decision[0] is Stage.ROLLED_BACK
    assert "agreement with the served model 0.000" in decision[1]
    # In canary the agreement no longer matters: the users' tags decide.
    assert decide(Stage.CANARY, evidence(20, ["a"], ["b"], ["c"]), POLICY) == (
        Stage.FULL,
        "advanced: 20 corrections in canary, online precision 0.000 vs served 0.000",
    )


def test_a_zero_minimum_advances_at_once_and_ended_stages_never_move() -> None:
    eager = RolloutSettings(enabled=True, shadow_min_corrections=0)
    assert decide(Stage.SHADOW, Evidence(), eager) == (
        Stage.CANARY,
        "advanced: no corrections required in shadow",
    )
    for ended in (Stage.FULL, Stage.ROLLED_BACK):
        assert decide(ended, evidence(100, ["a"], ["b"], ["a"]), eager) is None


@given(
    st.lists(
        st.tuples(
            st.sets(st.sampled_from("abcdef"), max_size=4),
            st.sets(st.sampled_from("abcdef"), max_size=4),
            st.sets(st.sampled_from("abcdef"), min_size=1, max_size=4),
        ),
        max_size=30,
    )
)
def test_evidence_stays_within_its_bounds(rows: list[tuple[set[str], set[str], set[str]]]) -> None:
    gathered = Evidence()
    for base, candidate, actual in rows:
        gathered.add(sorted(base), sorted(candidate), sorted(actual))
    summary = gathered.summary()
    assert summary["corrections"] == len(rows)
    values = [summary["agreement"], *summary["base"].values(), *summary["candidate"].values()]
    assert all(value is None or 0.0 <= value <= 1.0 for value in values)


def test_settings_come_from_the_environment() -> None:
    loaded = RolloutSettings.from_env(
        {
            "TAGLOOP_ROLLOUT_ENABLED": "true",
            "TAGLOOP_ROLLOUT_CANARY_FRACTION": "0.3",
            "TAGLOOP_ROLLOUT_SHADOW_MIN_CORRECTIONS": "5",
            "TAGLOOP_ROLLOUT_CANARY_MIN_CORRECTIONS": "7",
            "TAGLOOP_ROLLOUT_MIN_AGREEMENT": "0.4",
            "TAGLOOP_ROLLOUT_PRECISION_TOLERANCE": "0.1",
        }
    )
    assert loaded == RolloutSettings(True, 0.3, 5, 7, 0.4, 0.1)
    assert RolloutSettings.from_env({}) == RolloutSettings()


# --- the canary split ----------------------------------------------------------------------

titles = st.text(min_size=1, max_size=120)
fractions = st.floats(min_value=0.0, max_value=1.0)
VERSION = "20261130T180000000Z-abcdef"


@given(titles, fractions)
def test_a_title_meets_the_same_model_however_it_is_spelled(title: str, fraction: float) -> None:
    threshold = canary_threshold(fraction)
    chosen = in_canary(title, VERSION, threshold)
    assert in_canary(title, VERSION, threshold) == chosen  # stable
    assert in_canary(f"  {title.upper()}  ", VERSION, threshold) == in_canary(
        title.upper(), VERSION, threshold
    )
    assert in_canary(title.casefold(), VERSION, threshold) == in_canary(
        title.casefold().upper().casefold(), VERSION, threshold
    )


@given(titles, fractions, fractions)
def test_raising_the_fraction_keeps_every_canary_title_in_the_canary(
    title: str, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    if in_canary(title, VERSION, canary_threshold(low)):
        assert in_canary(title, VERSION, canary_threshold(high))
    assert not in_canary(title, VERSION, canary_threshold(0.0))
    assert in_canary(title, VERSION, canary_threshold(1.0))


def test_the_split_is_stable_across_processes_and_near_the_fraction() -> None:
    # sha256, not Python's per-process salted hash: a known value pins it.
    assert title_point("How to merge two dicts?", VERSION) == title_point(
        "how  to MERGE two dicts?", VERSION
    )
    rng = random.Random(17)
    sample = ["".join(rng.choices(string.ascii_letters + " ", k=40)) for _ in range(4000)]
    share = sum(in_canary(t, VERSION, canary_threshold(0.25)) for t in sample) / len(sample)
    assert 0.22 < share < 0.28
    # Another candidate samples other titles.
    other = "20261130T180000000Z-123456"
    picked = {t for t in sample if in_canary(t, VERSION, canary_threshold(0.25))}
    assert picked != {t for t in sample if in_canary(t, other, canary_threshold(0.25))}


# --- the record and the broadcast ------------------------------------------------------------


def record(stage: Stage = Stage.SHADOW, version: str = VERSION) -> RolloutRecord:
    return RolloutRecord(
        version=version,
        sha256="a" * 64,
        base_version="20261129T180000000Z-000000",
        stage=stage,
        canary_fraction=0.25,
        reason="test",
        issued_at="2026-11-30T18:00:00.000Z",
    )


def test_records_round_trip_and_refuse_what_is_not_one() -> None:
    original = record(Stage.CANARY)
    assert RolloutRecord.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    broken_documents: list[Any] = [
        [],
        {**original.to_dict(), "stage": "everywhere"},
        {**original.to_dict(), "version": "../../etc"},
        {**original.to_dict(), "canary_fraction": 2},
        {**original.to_dict(), "canary_fraction": True},
        {**original.to_dict(), "reason": None},
    ]
    for broken in broken_documents:
        with pytest.raises(InvalidRecord):
            RolloutRecord.from_dict(broken)
    assert tuple(str(stage) for stage in Stage) == STAGES


def test_stage_changes_share_the_model_topic_with_updates() -> None:
    change = StageChange(VERSION, "canary", "2026-11-30T18:00:00.000Z")
    assert parse_model_message(*change.to_message()) == change
    update = ModelUpdate(VERSION, "s3://b/k", "a" * 64, "2026-11-30T18:00:00.000Z")
    assert parse_model_message(*update.to_message()) == update
    _, attributes = change.to_message()
    for payload in (
        {"version": VERSION, "stage": "nowhere", "issued_at": "2026-11-30T18:00:00Z"},
        {"version": "x/../y", "stage": "canary", "issued_at": "2026-11-30T18:00:00Z"},
        {"version": VERSION, "stage": "canary", "issued_at": "yesterday"},
    ):
        with pytest.raises(InvalidMessage):
            parse_model_message(json.dumps(payload).encode(), attributes)


# --- the replica's routing ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def worse_model(train_data: LabeledData, fit_model: FitModel) -> TagModel:
    """A candidate trained on shuffled labels: it disagrees with the real model."""
    rows = 2000
    shuffled = list(train_data.tags[:rows])
    random.Random(3).shuffle(shuffled)
    return fit_model(TagModel(), train_data.titles[:rows], shuffled)


def loaded(model: TagModel, version: str) -> LoadedModel:
    return LoadedModel(model, version, {}, "2026-11-30T18:00:00.000+00:00", time.time())


@pytest.fixture
def replica(trained_model: TagModel) -> tuple[FlaskClient, Runtime]:
    settings = InferenceSettings.from_env({})
    runtime = Runtime(settings)
    runtime.holder.swap(loaded(trained_model, "20261129T180000000Z-000000"))
    return create_app(settings, runtime).test_client(), runtime


def candidate(model: TagModel, stage: Stage, fraction: float) -> replica_rollout.Candidate:
    return replica_rollout.Candidate(
        loaded(model, VERSION), stage, canary_threshold(fraction), "2026-11-30T18:00:00.000Z"
    )


def test_a_shadow_is_computed_but_never_shown(replica, worse_model, test_data) -> None:
    client, runtime = replica
    served = runtime.holder.current
    assert served is not None
    runtime.holder.candidate = candidate(worse_model, Stage.SHADOW, 1.0)
    compared = replica_metrics.SHADOW_COMPARED.labels(VERSION)._value.get()
    response = client.post("/api/predict", json={"titles": test_data.titles[:40]})
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == served.version
    shown = response.get_json()["predictions"]
    expected = served.model.predict_tag_sets(test_data.titles[:40])
    assert [[t["tag"] for t in p["tags"]] for p in shown] == expected
    assert replica_metrics.SHADOW_COMPARED.labels(VERSION)._value.get() == compared + 40


def test_a_canary_answers_its_share_of_titles_the_same_way_every_time(
    replica, worse_model, test_data
) -> None:
    client, runtime = replica
    served = runtime.holder.current
    assert served is not None
    runtime.holder.candidate = candidate(worse_model, Stage.CANARY, 0.3)
    titles = test_data.titles[:200]
    threshold = canary_threshold(0.3)
    body = client.post("/api/predict", json={"titles": titles}).get_json()["predictions"]
    versions = [p["model_version"] for p in body]
    assert versions == [
        VERSION if in_canary(t, VERSION, threshold) else served.version for t in titles
    ]
    assert 20 < versions.count(VERSION) < 100
    for title, answer in zip(titles[:20], body[:20], strict=True):
        single = client.post("/api/predict", json={"title": title})
        assert single.headers["X-Model-Version"] == answer["model_version"]
        assert single.get_json()["tags"] == answer["tags"]
    mixed = client.post("/api/predict", json={"titles": titles})
    assert set(mixed.headers["X-Model-Version"].split(", ")) == {served.version, VERSION}


def test_without_a_candidate_the_served_model_answers_everything(replica, test_data) -> None:
    client, runtime = replica
    served = runtime.holder.current
    assert served is not None and runtime.holder.candidate is None
    response = client.post("/api/predict", json={"titles": test_data.titles[:10]})
    assert response.headers["X-Model-Version"] == served.version
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'model_version="{served.version}",stage="full"' in metrics


def test_a_rollout_exports_every_rollout_series_the_dashboard_and_alerts_query() -> None:
    registry = CollectorRegistry()
    metrics = RolloutMetrics(registry)
    before = {metric.name for metric in registry.collect() if metric.samples}
    evidence = Evidence()
    evidence.add(["python"], ["python", "list"], ["python"])
    metrics.changed(record(Stage.CANARY), "evidence")
    metrics.observed(record(Stage.CANARY), evidence)
    exported = {sample.name for metric in registry.collect() for sample in metric.samples}
    queried = {name for name in referenced_metrics() if name.startswith("tagloop_rollout_")}
    assert queried and queried <= exported
    # Only the candidate-labelled series wait for a rollout; the change counter starts at 0.
    assert {name for name in queried if name.removesuffix("_total") not in before} <= (
        DURING_ROLLOUT
    )
