# ruff: noqa: N999 (gunicorn's conventional file name; it is exec'd, never imported)
"""gunicorn settings for the inference service (loaded by `tagloop serve inference`).

Everything that opens network clients (Pub/Sub gRPC channels, boto3) starts
in each worker after the fork, in `post_worker_init`: gRPC channels do not
survive a fork, and each worker owns its model-update subscription so that
every worker hears every broadcast.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from gunicorn import glogging

from inference_service.config import InferenceSettings
from tagloop.logs import configure_logging
from tagloop.web.wsgi_server import BUFFERED_WORKER, WORKER_CONNECTIONS

_settings = InferenceSettings.from_env()

wsgi_app = "inference_service.app:create_app()"
# Import and build the app once in the master: workers fork ready to serve (fast
# restarts, shared pages). The app holds no network clients until post_worker_init.
preload_app = True
# gthread, except that requests are collected in the main loop before a thread
# takes them: slow and idle clients cannot hold the threads (buffered_worker.py).
worker_class = BUFFERED_WORKER
workers = _settings.workers
threads = _settings.threads
# Clients are the UI proxy and load balancers that reuse connections.
keepalive = 15
worker_connections = WORKER_CONNECTIONS
timeout = 30
graceful_timeout = 20
GIL_SWITCH_SECONDS = 0.001
# Several replicas run side by side on one machine locally and in tests.
control_socket_disable = True


class Logger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's own messages go through tagloop's handler (JSON lines in containers)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging("inference")
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = Logger


def pre_fork(server: Any, worker: Any) -> None:
    """In the master, just before forking: everything imported and built so far (modules,
    the app) lives as long as the process. Freezing it keeps the workers' garbage
    collector from walking it (a full pass over it takes tens of milliseconds, right in
    some request's latency) and keeps its pages shared with the master."""
    gc.freeze()


def post_worker_init(worker: Any) -> None:
    """In the worker, after the fork and after the app was created: start loading the model
    and listening for updates (the subscriber and loader threads)."""
    from inference_service.app import runtime_of

    # Requests are short and CPU-bound: a thread waiting for the GIL should get it within
    # a millisecond, not the default 5, or queued requests pile up in the tail latency.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    runtime_of(worker.wsgi).start()


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker on its way out: delete its subscription, close its clients."""
    from inference_service.app import runtime_of

    app = getattr(worker, "wsgi", None)
    if app is not None:
        runtime_of(app).stop()


def child_exit(server: Any, worker: Any) -> None:
    """In the master: a dead worker's live gauges must stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
