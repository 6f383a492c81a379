"""`tagloop serve inference`: gunicorn in the foreground with gunicorn.conf.py.

prometheus-client must know its multiprocess directory before it is first
imported, so this sets PROMETHEUS_MULTIPROC_DIR (emptied, or a fresh temp
dir) before gunicorn loads the app in its workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import util
from gunicorn.app.base import Application

from inference_service.config import InferenceSettings
from tagloop.logs import configure_logging

log = logging.getLogger(__name__)

CONFIG_FILE = Path(__file__).with_name("gunicorn.conf.py")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class InferenceServer(Application):
    """gunicorn configured from our file and a bind address, never from sys.argv."""

    def __init__(self, bind: str) -> None:
        self.bind = bind
        super().__init__(prog="tagloop serve inference")

    def load_config(self) -> None:
        self.load_config_from_file(str(CONFIG_FILE))
        self.cfg.set("bind", [self.bind])

    def load(self) -> object:
        return util.import_app(self.cfg.wsgi_app)


def fresh_metrics_dir() -> tuple[Path, bool]:
    """Empty the configured multiprocess directory, or create one; (path, created)."""
    configured = os.environ.get(MULTIPROC_ENV, "").strip()
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's counters must not leak in
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="tagloop-inference-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def run(host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT; returns gunicorn's exit status."""
    configure_logging("inference")
    InferenceSettings.from_env()  # fail fast, naming the bad variable
    metrics_dir, created = fresh_metrics_dir()
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log.info("starting gunicorn on %s (metrics in %s)", bind, metrics_dir)
    try:
        InferenceServer(bind).run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
