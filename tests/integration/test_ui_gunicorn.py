"""The UI server as `tagloop serve ui` runs it: gunicorn workers, raw HTTP paths, start-up checks."""

from __future__ import annotations

import concurrent.futures
import http.client
import re
import subprocess
import threading

import pytest
import requests

from tagloop_dev.launchers import TAGLOOP
from tests.fixtures.pubsub import free_port
from tests.fixtures.ui import start_ui


def test_over_raw_http_no_path_is_rewritten(upstreams: list[str]) -> None:
    """The same through gunicorn, where the path arrives exactly as the client wrote it."""
    with start_ui(upstreams[:1]) as ui:
        conn = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=10)
        for path in ("/api/..%2fmetrics", "/api//model", "/api/%2e%2e/healthz"):
            conn.request("GET", path, headers={"Host": "evil.example"})
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status == 404, (path, body)
            assert response.getheader("Location") is None
            assert "tagloop_" not in body
        conn.close()


def test_served_by_gunicorn_with_worker_metrics(upstreams: list[str]) -> None:
    with start_ui(upstreams, TAGLOOP_WORKERS="2") as ui:
        session = requests.Session()
        page = session.get(ui.base_url + "/", timeout=5)
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        for _ in range(6):
            assert session.get(ui.base_url + "/api/tags", timeout=5).status_code == 200
        metrics = session.get(ui.base_url + "/metrics", timeout=5).text
        count = re.search(
            r'tagloop_http_requests_total\{endpoint="/api/<path:rest>",method="GET",status="200"\} (\S+)',
            metrics,
        )
        assert count is not None
        assert float(count.group(1)) == 6.0  # summed over both workers


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGLOOP_UI_UPSTREAMS": "nonsense"}, "TAGLOOP_UI_UPSTREAMS"),
        ({"TAGLOOP_UNLABELED_DATA": "/nonexistent/unlabeled.tsv"}, "no such file"),
    ],
)
def test_bad_configuration_stops_start_up_with_a_clear_message(
    env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [str(TAGLOOP), "serve", "ui", "--port", str(free_port())],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_a_waiting_proxied_request_holds_no_thread(
    kept_alive_upstreams: list[str], release: threading.Event, held: threading.Event
) -> None:
    """With one thread, a page route is answered while a proxied request waits for its replica:
    the wait is in the worker's main loop (frontend/loop_proxy.py), not in the thread."""
    with start_ui(kept_alive_upstreams[:1], TAGLOOP_THREADS="1") as ui:
        session = requests.Session()
        # A first proxied request leaves a kept-alive upstream connection for the loop.
        assert session.get(ui.base_url + "/api/tags", timeout=5).status_code == 200
        release.clear()
        held.clear()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(requests.get, ui.base_url + "/api/model", timeout=10)
            assert held.wait(5), "the replica never got the request"
            page = requests.get(ui.base_url + "/ui/config", timeout=5)
            assert page.status_code == 200
            assert not waiting.done()
            release.set()
            answer = waiting.result()
        assert answer.status_code == 200 and answer.json()["upstream"] == "a"
        assert "Set-Cookie" in answer.headers
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        metrics = session.get(ui.base_url + "/metrics", timeout=5).text
        assert re.search(
            r'tagloop_http_request_duration_seconds_count\{endpoint="/api/<path:rest>",method="GET"\} 2.0',
            metrics,
        )
