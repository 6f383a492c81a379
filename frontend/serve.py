"""`tagloop serve ui`: the UI server under gunicorn (buffered gthread), as in the container image.

Settings and the queue file are validated in the master before any worker
starts, so a bad variable or file stops start-up with a clear message instead
of a loop of failing workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from frontend.settings import UISettings
from frontend.tag_rules import tag_rules
from tagloop.domain.data import load_titles
from tagloop.logs import configure_logging
from tagloop.web.wsgi_server import (
    BUFFERED_WORKER,
    WORKER_CONNECTIONS,
    bind_address,
    fresh_metrics_dir,
    run_application,
)

log = logging.getLogger(__name__)


class _RootLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn's messages go through the root logger, hence `configure_logging`'s format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers.clear()
        self.error_log.propagate = True


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class _Application(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory()


def gunicorn_options(settings: UISettings, host: str, port: int) -> dict[str, Any]:
    return {
        "bind": [bind_address(host, port)],
        "workers": settings.workers,
        "threads": settings.threads,
        # gthread that collects each request before a thread takes it (slow clients).
        "worker_class": BUFFERED_WORKER,
        "worker_connections": WORKER_CONNECTIONS,
        "timeout": 30,
        # Below Kubernetes' 30 s termination grace period.
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("TAGLOOP_LOG_LEVEL", "info").lower(),
        "logger_class": _RootLogger,
        "proc_name": "tagloop-ui",
        "control_socket_disable": True,
        "child_exit": _child_exit,
    }


def run(host: str, port: int) -> int:
    """Serve in the foreground until SIGTERM/SIGINT; returns gunicorn's exit status."""
    configure_logging("ui")
    settings = UISettings.from_env()
    titles = load_titles(settings.unlabeled_data)
    # prometheus_client picks its multi-process mode when first imported, so the
    # directory is set before the app module (and prometheus_client) is loaded.
    metrics_dir, created = fresh_metrics_dir("ui")
    from frontend.app import create_app

    tag_rules()  # computed once here, inherited by every worker
    log.info(
        "UI on %s:%s, %d queued titles, upstreams %s",
        host,
        port,
        len(titles),
        ", ".join(settings.upstreams),
    )
    server = _Application(
        lambda: create_app(settings, titles), gunicorn_options(settings, host, port)
    )
    return run_application(server, metrics_dir, created)
