"""Issue 11's input contract end to end: a real replica (gunicorn), the real learner, the
project's emulator and SeaweedFS, and the UI server where a browser's cookie matters.

- every 202 is in feedback.csv after a learner restart, every other answer is a 4xx;
- one client (one browser, or one address) cannot add a tag, however many titles it uses;
- JSON Python cannot represent is a 400 through the UI and on a replica, never a 500;
- a feedback.csv row the learner cannot read is quarantined, and the learner starts.
"""

from __future__ import annotations

import base64
import csv
import functools
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from learning_service.store import HEADER, StoredFeedback
from tagloop.domain.messages import Feedback
from tagloop.replay import REPLAYED, corrections
from tagloop.web.annotators import address_annotator
from tagloop_dev.launchers import LearnerProcess
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import Replica, replica_env, start_replica
from tests.fixtures.learning import LearnerStack
from tests.fixtures.ui import start_ui
from tests.fixtures.wait import wait_until

BATCH = 100
BATCHES = 20  # 2,000 generated corrections
READY_TIMEOUT = 180.0  # the bootstrap fit, on a loaded CI machine
NEW_TAG = "zzpwned-tag"

text = st.text(st.characters(exclude_categories=[]), max_size=60)
junk = st.none() | st.booleans() | st.integers() | st.floats() | text | st.lists(text, max_size=2)
plain_titles = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=80)
titles = st.one_of(
    plain_titles,
    plain_titles,
    text,
    st.sampled_from(
        ["How do I parse JSON in Python?", "  Tabs\tand\nnewlines  ", "\u0000\u0000", "\u007f"]
    ),
)
valid_tags = st.lists(
    st.sampled_from(["python", " Java", "node js", "c#", "r", "ggplot2"]), min_size=1, max_size=4
)
tags = st.one_of(valid_tags, valid_tags, st.lists(text, max_size=3))


def sometimes_junk(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly a valid value, so that a good share of the corrections is accepted."""
    return st.one_of(valid, valid, valid, junk)


bodies = st.fixed_dictionaries(
    {"title": titles, "tags": tags},
    optional={
        "predicted_tags": sometimes_junk(st.lists(st.sampled_from(["python", "java"]), max_size=2)),
        "model_version": sometimes_junk(st.just("20261122T051500123Z-1a2b3c")),
        # Fresh ids only: two different bodies under one id would make "the" stored one ambiguous.
        "feedback_id": sometimes_junk(st.builds(lambda: str(uuid.uuid4()))),
        "annotator": st.just("anon:chosen-by-the-client") | junk,
        "extra": junk,
    },
).map(lambda body: json.dumps(body).encode())  # ensure_ascii: lone surrogates as \\udxxx
HOSTILE = [
    b'{"title": "x", "tags": ["python"], "n": ' + b"1" * 4301 + b"}",
    b'{"title": "x", "tags": ["python"], "n": NaN}',
    b'{"title": "x", "title": "y", "tags": ["python"]}',
    b'{"title": "x", "tags": ' + b"[" * 50 + b"]" * 50 + b"}",
    b"\xff\xfe",
    b'{"title": ',
]
payloads = bodies | st.sampled_from(HOSTILE)


@dataclass
class ContractStack:
    stack: LearnerStack
    learner: LearnerProcess
    replica: Replica

    def restart_learner(self) -> LearnerProcess:
        assert self.learner.stop() == 0
        # Answering /healthz means the store was opened: every row was read (or quarantined).
        self.learner = self.stack.learner().start(ready=False)
        return self.learner


@pytest.fixture
def contract_stack(
    learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path
) -> Iterator[ContractStack]:
    learner_stack.subscribe_learner()
    learner = learner_stack.learner().start(ready=False)  # ingesting needs no model
    env = replica_env(
        emulator_host=learner_stack.env["PUBSUB_EMULATOR_HOST"],
        project=learner_stack.env["TAGLOOP_GCP_PROJECT"],
        s3=s3_server,
        bucket=learner_stack.registry.bucket,
        cache_dir=tmp_path / "cache",
        TAGLOOP_FEEDBACK_RATE="1000000",
        TAGLOOP_FEEDBACK_BURST="1000000",
        TAGLOOP_PROXY_HOPS="1",  # the UI server is the trusted hop (direct calls send no header)
    )
    with start_replica(env, wait_ready=False) as replica:
        yield ContractStack(learner_stack, learner, replica)


def stored_rows(path: Path) -> dict[str, StoredFeedback]:
    lines = path.read_bytes().split(b"\n")
    assert lines[0] + b"\n" == HEADER and lines[-1] == b""
    rows = [StoredFeedback.from_line(line) for line in lines[1:-1]]
    return {row.feedback_id: row for row in rows}


def feedback_rows(learner: LearnerProcess) -> int:
    return int(learner.get("/api/status")["corpus"]["feedback_rows"])


def test_every_202_is_stored_and_read_back_after_a_restart_and_nothing_else_is_a_5xx(
    contract_stack: ContractStack,
) -> None:
    session = requests.Session()
    url = contract_stack.replica.base_url + "/api/feedback"
    statuses: Counter[int] = Counter()
    accepted: dict[str, Feedback] = {}

    def post(data: bytes) -> tuple[bytes, requests.Response]:
        headers = {"Content-Type": "application/json"}
        return data, session.post(url, data=data, headers=headers, timeout=30)

    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(payloads, min_size=BATCH, max_size=BATCH))
    def send(batch: list[bytes]) -> None:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, batch))
        for data, response in answers:
            statuses[response.status_code] += 1
            assert response.status_code == 202 or 400 <= response.status_code < 500, (
                data[:300],
                response.text,
            )
            if response.status_code == 202:
                body = json.loads(data)
                body.pop("annotator", None)  # the server's fact, never the client's claim
                expected = Feedback.from_dict(body)  # what the contract promises
                accepted[response.json()["feedback_id"]] = expected

    send()
    assert sum(statuses.values()) == BATCH * BATCHES
    assert len(accepted) > BATCH, statuses  # the generator is not just noise
    learner = contract_stack.learner
    wait_until(lambda: feedback_rows(learner) == len(accepted), timeout=60, what="all stored")

    learner = contract_stack.restart_learner()
    assert feedback_rows(learner) == len(accepted)
    assert learner.metric("tagloop_feedback_quarantined_total") == 0
    rows = stored_rows(contract_stack.stack.feedback_csv())
    assert rows.keys() == accepted.keys()
    client = address_annotator("127.0.0.1")  # never the body's "annotator"
    for feedback_id, expected in accepted.items():
        row = rows[feedback_id]
        assert (row.title, row.tags, row.predicted_tags, row.model_version, row.annotator) == (
            expected.title,
            expected.tags,
            expected.predicted_tags,
            expected.model_version,
            client,
        )


def test_one_client_cannot_add_a_tag_and_unrepresentable_json_is_a_400_through_the_ui(
    contract_stack: ContractStack,
) -> None:
    """Issue 11, reproductions 5 and 10, through the UI server with a browser's cookie jar."""
    learner, replica = contract_stack.learner, contract_stack.replica
    huge = b'{"title": "x", "n": ' + b"1" * 4301 + b"}"
    json_headers = {"Content-Type": "application/json"}
    assert replica.post("/api/feedback", data=huge, headers=json_headers).status_code == 400
    assert replica.post("/api/predict", data=huge, headers=json_headers).status_code == 400

    with start_ui([replica.base_url]) as ui:
        browser = requests.Session()
        browser.get(ui.base_url + "/")  # the page load gives the browser its annotator id
        answer = browser.post(ui.base_url + "/api/feedback", data=huge, headers=json_headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "number_too_large")
        titles = [f"Three distinct titles from one browser, number {i}" for i in range(3)]
        for title in titles:
            answer = browser.post(
                ui.base_url + "/api/feedback", json={"title": title, "tags": [NEW_TAG]}
            )
            assert answer.status_code == 202, answer.text
        titles[1:] = ["Direct title 1", "Direct title 2"]  # one title in common: agreement
        direct = requests.Session()  # and the same trick straight at a replica, by address
        for i in range(3):
            answer = direct.post(
                replica.base_url + "/api/feedback",
                json={"title": titles[i], "tags": [NEW_TAG], "annotator": f"anon:{i}"},
            )
            assert answer.status_code == 202, answer.text

    wait_until(lambda: feedback_rows(learner) == 6, timeout=30, what="six corrections stored")
    status = learner.get("/api/status")
    held_back = status["held_back_tags"]
    assert held_back["top"] == {NEW_TAG: 5} and held_back["min_annotators"] == 3
    assert status["agreement"] == {
        "titles": 1,
        "pairs": 1,
        "overall": 1.0,
        "per_tag": {NEW_TAG: {"agreement": 1.0, "pairs": 1}},
    }
    assert learner.metric("tagloop_annotator_agreement") == 1.0
    annotators = {
        row.annotator for row in stored_rows(contract_stack.stack.feedback_csv()).values()
    }
    assert len(annotators) == 2 and address_annotator("127.0.0.1") in annotators


def test_an_unreadable_row_is_quarantined_and_the_learner_starts(
    learner_stack: LearnerStack,
) -> None:
    good = [
        StoredFeedback.from_feedback(
            Feedback.from_dict({"title": f"Readable title {i}", "tags": ["python"]}),
            "2026-01-01T00:00:00.000Z",
        ).to_line()
        for i in range(2)
    ]
    corrupt = b'damaged,"row\x00,with,"half a quote'
    path = learner_stack.feedback_csv()
    path.parent.mkdir(parents=True)
    path.write_bytes(HEADER + good[0] + corrupt + b"\n" + good[1])

    # Ready: start-up did not stop at the damage.
    learner = learner_stack.learner().start(timeout=READY_TIMEOUT)
    assert feedback_rows(learner) == 2
    assert learner.metric("tagloop_feedback_quarantined_total") == 1
    assert path.read_bytes() == HEADER + good[0] + good[1]
    [entry] = [json.loads(line) for line in path.with_name("feedback.quarantine.jsonl").open()]
    assert (entry["line"], base64.b64decode(entry["raw_base64"])) == (3, corrupt)
    assert "moved to" in learner.output()
    with path.open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_export_then_replay_into_an_empty_store_reproduces_the_corrections_once(
    contract_stack: ContractStack, tmp_path: Path, suffix: str
) -> None:
    """Issue 18: `tagloop export`, then `tagloop replay` (twice) into a learner with no rows."""
    replica = contract_stack.replica
    for i in range(5):
        body = {"title": f"Exported title {i}", "tags": ["python"], "model_version": "v1"}
        assert replica.post("/api/feedback", json=body).status_code == 202
    wait_until(lambda: feedback_rows(contract_stack.learner) == 5, what="five stored")
    first = tmp_path / f"first.{suffix}"
    tagloop = [sys.executable, "-m", "tagloop.cli"]
    data_dir = str(contract_stack.stack.data_dir)
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True)
    run([*tagloop, "export", "--data-dir", data_dir, "--out", str(first)])

    assert contract_stack.learner.stop() == 0
    contract_stack.stack.feedback_csv().unlink()
    contract_stack.learner = contract_stack.stack.learner().start(ready=False)
    for _ in range(2):
        replayed = run([*tagloop, "replay", str(first), "--url", replica.base_url])
        assert "replayed 5: 5 x 202" in replayed.stdout
    wait_until(lambda: feedback_rows(contract_stack.learner) == 5, what="five stored again")
    second = tmp_path / "second.csv"
    run([*tagloop, "export", "--data-dir", data_dir, "--out", str(second)])

    def essence(path: Path) -> list[tuple[str, ...]]:
        bodies = corrections(path)
        return sorted(tuple(str(body[key]) for key in REPLAYED) for body in bodies)

    assert essence(second) == essence(first)
    assert len(essence(first)) == 5
