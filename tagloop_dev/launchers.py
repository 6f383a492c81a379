"""`tagloop serve learning` as a child process, for tests, benchmarks and tooling.

The learner runs exactly as in the local stack and the containers; callers
talk to it over HTTP and signal it like an orchestrator would (SIGTERM for a
clean stop, SIGKILL for a crash).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import requests
from prometheus_client.parser import text_string_to_metric_families

from tagloop_dev.processes import ChildLauncher, ChildProcess, free_port

START_TIMEOUT = 60.0
TAGLOOP = Path(sys.executable).with_name("tagloop")


def serve_child(
    service: str,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    new_session: bool = False,
) -> ChildProcess:
    """`tagloop serve <service>` on 127.0.0.1:`port` as a (not yet started) child.

    gunicorn-based services (inference, ui) pass `new_session` so that a
    stop past its deadline kills the master and its workers together.
    """
    command = [str(TAGLOOP), "serve", service, "--host", "127.0.0.1", "--port", str(port)]
    return ChildProcess(
        f"{service} server on {port}", command, log_path=log_path, env=env, new_session=new_session
    )


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus exposition (0 when absent, as a counter starts)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class LearnerProcess(ChildLauncher):
    """One learner process on a free port, configured by `env`, logging to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.child = serve_child("learning", self.port, env, log_path)

    def start(self, ready: bool = True, timeout: float = START_TIMEOUT) -> Self:
        """Start, then wait for /healthz, or /readyz (a current model, the subscription pulled)."""
        self.child.env = self.env
        self.child.start()
        path = "/readyz" if ready else "/healthz"
        self.child.wait_ready(lambda: self._answers(path), timeout)
        return self

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(self.url + path, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def get(self, path: str) -> Any:
        """JSON of a GET (the text for /metrics); raises for an error status."""
        response = requests.get(self.url + path, timeout=10)
        response.raise_for_status()
        return response.text if path == "/metrics" else response.json()

    def post(self, path: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, headers=headers, timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.get("/metrics"), name, **labels)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.child.kill()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown exits 0."""
        return self.child.stop(timeout)
