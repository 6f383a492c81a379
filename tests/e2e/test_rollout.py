"""Staged rollout end to end on the real local stack (`tagloop up`, two replicas, the UI).

Small evidence thresholds (settings below) keep each stage to a handful of
corrections. Predictions and corrections go through the UI exactly as the
browser sends them; stages are read from the learner's API and from what
every replica says it runs (its metrics), never from the learner alone.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagloop.channels.registry import Registry, new_version
from tagloop.domain.bundle import save_bundle
from tagloop.domain.data import load_labeled
from tagloop.domain.model import TagModel
from tagloop.domain.signing import Signer
from tagloop_dev.s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.fixtures.learning import ADMIN_TOKEN, tagloop_models
from tests.fixtures.stack import (
    StackProcess,
    feedback_rows,
    learner_status,
    loop_env,
    replica_version,
    scrape,
)
from tests.fixtures.wait import wait_until

pytestmark = pytest.mark.slow

MIN_CORRECTIONS = 12
ROLLBACK_SECONDS = 15.0
ROLLOUT_ENV = {  # with `tagloop up --rollout` (the stack sets TAGLOOP_ROLLOUT_ENABLED itself)
    "TAGLOOP_ROLLOUT_CANARY_FRACTION": "0.5",
    "TAGLOOP_ROLLOUT_SHADOW_MIN_CORRECTIONS": str(MIN_CORRECTIONS),
    "TAGLOOP_ROLLOUT_CANARY_MIN_CORRECTIONS": str(MIN_CORRECTIONS),
    "TAGLOOP_ROLLOUT_MIN_AGREEMENT": "0.5",
    "TAGLOOP_ROLLOUT_PRECISION_TOLERANCE": "0.05",
    # Candidates come from a retrain or the registry, not from the corrections that judge them.
    "TAGLOOP_REFIT_EVERY": "100000",
    "TAGLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Iterator[StackProcess]:
    var = tmp_path_factory.mktemp("rollout") / "var"
    with StackProcess(var, env={**loop_env(small_corpus), **ROLLOUT_ENV}, rollout=True) as up:
        yield up


def rollout(stack: StackProcess) -> dict[str, Any]:
    answer = requests.get(f"{stack.learner_url}/api/rollout", timeout=5)
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def stage_of(stack: StackProcess, version: str) -> str | None:
    record = rollout(stack)["rollout"]
    return record["stage"] if record and record["version"] == version else None


def candidates(url: str) -> dict[tuple[str, str], float]:
    """(version, stage) -> the replica's candidate info gauge."""
    info = scrape(url).get("tagloop_inference_candidate_info", {})
    return {
        (dict(labels)["version"], dict(labels)["stage"]): value for labels, value in info.items()
    }


def every_replica_runs(stack: StackProcess, version: str | None, stage: str | None = None) -> bool:
    """Each replica runs `version` in `stage` beside its served model (None: no candidate)."""
    for url in stack.replica_urls:
        running = {key for key, value in candidates(url).items() if value == 1}
        if running != ({(version, stage)} if version else set()):
            return False
    return True


def predict(stack: StackProcess, title: str) -> tuple[str, list[str]]:
    """Through the UI: (X-Model-Version, tags shown)."""
    answer = requests.post(f"{stack.ui_url}/api/predict", json={"title": title}, timeout=10)
    answer.raise_for_status()
    return answer.headers["X-Model-Version"], [tag["tag"] for tag in answer.json()["tags"]]


def correct(stack: StackProcess, rows: list[tuple[str, list[str]]]) -> None:
    """What the UI's browser code does: show a prediction, then send the user's tags."""
    for title, tags in rows:
        version, shown = predict(stack, title)
        body = {"title": title, "tags": tags, "predicted_tags": shown, "model_version": version}
        answer = requests.post(f"{stack.ui_url}/api/feedback", json=body, timeout=10)
        assert answer.status_code == 202, answer.text


def models_cli(stack: StackProcess, *args: str) -> str:
    """`tagloop models ARGS` against the stack's learner; its stdout (it must succeed)."""
    done = tagloop_models(stack.learner_url, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_retrained_candidate_goes_through_shadow_and_canary_to_full(
    stack: StackProcess,
) -> None:
    base = learner_status(stack)["current_version"]
    wait_until(lambda: all(replica_version(u) == base for u in stack.replica_urls), timeout=60)
    answer = requests.post(
        f"{stack.learner_url}/api/retrain",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    candidate = wait_until(
        lambda: (record := rollout(stack)["rollout"]) and record["version"],
        timeout=120,
        what="the retrained candidate to enter the rollout",
    )
    assert stage_of(stack, candidate) == "shadow"
    assert learner_status(stack)["current_version"] == base  # not served yet

    # Shadow: both replicas predict with the candidate, the users see only the base.
    wait_until(lambda: every_replica_runs(stack, candidate, "shadow"), timeout=30, what="shadow")
    rows = feedback_rows(4 * MIN_CORRECTIONS)
    assert {predict(stack, title)[0] for title, _ in rows[:10]} == {base}
    compared = sum(
        scrape(url)["tagloop_inference_shadow_compared_total"][(("model_version", candidate),)]
        for url in stack.replica_urls
    )
    assert compared >= 10

    correct(stack, rows[:MIN_CORRECTIONS])
    wait_until(lambda: stage_of(stack, candidate) == "canary", timeout=60, what="canary")

    # Canary: about half the titles meet the candidate, each title always the same model.
    wait_until(lambda: every_replica_runs(stack, candidate, "canary"), timeout=30, what="canary")
    titles = [title for title, _ in rows]
    first = {title: predict(stack, title)[0] for title in titles}
    assert set(first.values()) == {base, candidate}
    assert all(predict(stack, title)[0] == first[title] for title in titles[:20])

    correct(stack, rows[MIN_CORRECTIONS : 2 * MIN_CORRECTIONS])
    wait_until(lambda: stage_of(stack, candidate) == "full", timeout=60, what="full")
    assert learner_status(stack)["current_version"] == candidate
    wait_until(
        lambda: (
            all(replica_version(u) == candidate for u in stack.replica_urls)
            and every_replica_runs(stack, None)
        ),
        timeout=30,
        what="both replicas serving the candidate, no candidate beside it",
    )
    history = rollout(stack)["history"]
    assert [change["stage"] for change in history] == ["shadow", "canary", "full"]
    assert "passed the gate" in history[0]["reason"]
    assert "agreement" in history[1]["reason"] and "online precision" in history[2]["reason"]

    # The acceptance: `tagloop models rollback` -> both replicas on the previous
    # version within 15 s (by broadcast; reconciliation alone takes up to a minute).
    started = time.monotonic()
    rolled = json.loads(models_cli(stack, "rollback"))
    assert rolled["current_version"] == base
    wait_until(
        lambda: all(replica_version(u) == base for u in stack.replica_urls),
        timeout=ROLLBACK_SECONDS,
        what="both replicas back on the previous version",
    )
    print(f"rollback: both replicas on {base} after {time.monotonic() - started:.1f} s")


def worse_candidate(stack: StackProcess, small_corpus: Path, tmp_path: Path) -> str:
    """A version trained on shuffled labels, stored and signed as the learner would have
    (a bad candidate that slipped through the offline gate)."""
    data = load_labeled(small_corpus)
    shuffled = list(data.tags)
    random.Random(7).shuffle(shuffled)
    version = new_version()
    bundle = tmp_path / "worse"
    save_bundle(TagModel().fit(data.titles, shuffled), bundle, {"version": version})
    registry = Registry(
        "tagloop-models",
        endpoint_url=f"http://127.0.0.1:{stack.ports.s3}",
        access_key=DEFAULT_ACCESS_KEY,
        secret_key=DEFAULT_SECRET_KEY,
        signer=Signer.from_file(stack.var_dir / "keys" / "model-signing.key"),
    )
    decision = {"promoted": True, "reason": "slipped through the gate (test)"}
    registry.put_version(version, bundle, {"decision": decision, "metrics": {"f1_macro": 0.9}})
    return version


def test_a_worse_candidate_is_rolled_back_from_canary_on_online_evidence(
    stack: StackProcess, small_corpus: Path, tmp_path: Path
) -> None:
    served = learner_status(stack)["current_version"]
    worse = worse_candidate(stack, small_corpus, tmp_path)
    # An operator starts it in canary (skipping shadow, whose agreement would stop it).
    staged = models_cli(stack, "stage", worse, "canary", "--reason", "test: skip shadow")
    assert json.loads(staged)["stage"] == "canary"
    wait_until(lambda: every_replica_runs(stack, worse, "canary"), timeout=30, what="canary")

    rows = feedback_rows(MIN_CORRECTIONS, offset=200)
    correct(stack, rows)
    wait_until(lambda: stage_of(stack, worse) == "rolled_back", timeout=60, what="rollback")
    record = rollout(stack)["rollout"]
    assert "online precision" in record["reason"] and "below the served model" in record["reason"]
    wait_until(lambda: every_replica_runs(stack, None), timeout=30, what="candidate dropped")
    assert learner_status(stack)["current_version"] == served
    assert {predict(stack, title)[0] for title, _ in rows} == {served}
    # Never a rollback target again: its decision now says why it is not promoted.
    shown = json.loads(models_cli(stack, "show", worse))
    assert shown["decision"]["promoted"] is False
    assert "rolled back from canary" in shown["decision"]["reason"]
    learner = scrape(stack.learner_url)
    changes = learner["tagloop_rollout_stage_changes_total"]
    assert changes[(("stage", "rolled_back"), ("trigger", "evidence"))] >= 1
