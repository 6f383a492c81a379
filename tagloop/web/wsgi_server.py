"""Running a Flask app under gunicorn in the foreground, shared by the inference and UI services.

prometheus-client picks its multiprocess mode when first imported, so the
metrics directory is prepared here, before the app (and prometheus-client) is
loaded; this module must stay free of that import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BUFFERED_WORKER = "tagloop.web.buffered_worker.BufferedThreadWorker"
"""The worker class of both HTTP services (gthread that collects requests first)."""
WORKER_CONNECTIONS = 1000
"""Open client connections per worker; beyond it new ones wait in the listen backlog."""


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fresh_metrics_dir(prefix: str) -> tuple[Path, bool]:
    """Empty the configured multiprocess directory, or create one; (path, created)."""
    configured = os.environ.get(MULTIPROC_ENV, "").strip()
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's counters must not leak in
            stale.unlink()
        for stale in path.glob("*.sqlite*"):  # nor its shared state (rate limits)
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix=f"tagloop-{prefix}-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def run_application(server: BaseApplication, metrics_dir: Path, created: bool) -> int:
    """Run gunicorn until SIGTERM/SIGINT; returns its exit status and removes a temp metrics dir."""
    try:
        server.run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
