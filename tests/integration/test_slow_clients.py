"""Slow and idle clients cannot starve the UI or a replica (issue 11, reproduction 7).

20 connections send a request head a line at a time (slowloris) and 100 more
open and send nothing, against a real replica and against the real UI server
in front of it, while a well-behaved client keeps predicting on fresh
connections: every prediction answers, p99 at most 1 s. Loops are bounded and
everything stays on loopback.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tagloop_dev.slow_clients import hostile_clients
from tests.fixtures.inference import InferenceSetup
from tests.fixtures.ui import start_ui
from tests.fixtures.wait import wait_until

PREDICTIONS = 60
P99_SECONDS = 1.0


def predict_latencies(base_url: str) -> list[float]:
    """A normal client: each prediction on a new connection, as a browser's first request."""
    latencies = []
    for i in range(PREDICTIONS):
        started = time.perf_counter()
        response = requests.post(
            base_url + "/api/predict",
            json={"title": f"how to merge two dicts in python {i}"},
            timeout=5,
            headers={"Connection": "close"},
        )
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json()["tags"]
    return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.fixture(scope="module")
def replica(inference_replica: InferenceSetup) -> str:
    """The session's replica once both its workers loaded the model (readiness needs one)."""
    replica = inference_replica.replica
    wait_until(
        lambda: replica.metric("tagloop_inference_model_reloads_total", trigger="startup") >= 2,
        timeout=60,
        what="both workers serving the model",
    )
    return inference_replica.replica.base_url


def test_slow_and_idle_clients_do_not_starve_a_replica(replica: str) -> None:
    with hostile_clients(replica):
        latencies = predict_latencies(replica)
    assert p99(latencies) <= P99_SECONDS, sorted(latencies)[-5:]


def test_slow_and_idle_clients_do_not_starve_the_ui(replica: str) -> None:
    with start_ui([replica]) as ui, hostile_clients(ui.base_url):
        latencies = predict_latencies(ui.base_url)
    assert p99(latencies) <= P99_SECONDS, sorted(latencies)[-5:]


def test_an_unfinished_request_head_is_answered_408_and_closed(replica: str) -> None:
    with socket.create_connection(("127.0.0.1", int(replica.rsplit(":", 1)[1]))) as conn:
        conn.settimeout(30)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = conn.recv(4096)  # the server's deadline ends the wait, not ours
    assert answer.startswith(b"HTTP/1.1 408 "), answer
