"""`tagloop serve inference`: gunicorn in the foreground with gunicorn.conf.py.

prometheus-client must know its multiprocess directory before it is first
imported, so this sets PROMETHEUS_MULTIPROC_DIR (emptied, or a fresh temp
dir) before gunicorn loads the app in its workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gunicorn import util
from gunicorn.app.base import Application

from inference_service.config import InferenceSettings
from tagloop.logs import configure_logging
from tagloop.web.wsgi_server import bind_address, fresh_metrics_dir, run_application

log = logging.getLogger(__name__)

CONFIG_FILE = Path(__file__).with_name("gunicorn.conf.py")


class InferenceServer(Application):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn configured from our file and a bind address, never from sys.argv."""

    def __init__(self, bind: str) -> None:
        self.bind = bind
        super().__init__(prog="tagloop serve inference")

    def load_config(self) -> None:
        self.load_config_from_file(str(CONFIG_FILE))
        self.cfg.set("bind", [self.bind])

    def load(self) -> object:
        return util.import_app(self.cfg.wsgi_app)


def run(host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT; returns gunicorn's exit status."""
    configure_logging("inference")
    InferenceSettings.from_env()  # fail fast, naming the bad variable
    metrics_dir, created = fresh_metrics_dir("inference")
    bind = bind_address(host, port)
    log.info("starting gunicorn on %s (metrics in %s)", bind, metrics_dir)
    return run_application(InferenceServer(bind), metrics_dir, created)
