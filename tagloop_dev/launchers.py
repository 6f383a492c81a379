"""`tagloop serve learning` as a child process, for tests, benchmarks and tooling.

The learner runs exactly as in the local stack and the containers; callers
talk to it over HTTP and signal it like an orchestrator would (SIGTERM for a
clean stop, SIGKILL for a crash).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tagloop_dev.processes import free_port, stop_process

START_TIMEOUT = 60.0
POLL_SECONDS = 0.05


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in a Prometheus exposition (0 when absent, as a counter starts)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class LearnerProcess:
    """One learner process on a free port, configured by `env`, logging to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True, timeout: float = START_TIMEOUT) -> LearnerProcess:
        """Start, then wait for /healthz, or /readyz (a current model, the subscription pulled)."""
        command = [str(Path(sys.executable).parent / "tagloop"), "serve", "learning"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)], stdout=log, stderr=log, env=self.env
            )
        path = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + timeout
        while not self._answers(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"learner not answering {path} after {timeout}s")
            time.sleep(POLL_SECONDS)
        return self

    def _answers(self, path: str) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"learner exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(self.url + path, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.process = None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a clean shutdown exits 0."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        return stop_process(process, timeout)
