"""`tagloop serve learning`: the learner in the foreground until SIGTERM/SIGINT.

HTTP is served by waitress, a production WSGI server that runs in threads of
this process. The learner must stay exactly one process: it is the only
consumer of its subscription and the only writer of feedback.csv, and the API
reads the ingest and fit state in memory. A pre-fork server (gunicorn) would
add a master whose SIGKILL leaves an orphaned worker still appending to the
CSV while a restarted learner opens it; in one process a kill stops every
writer at once. Fits run in a spawned worker process of their own.

That worker is spawned first, before this process imports its web server,
Pub/Sub and S3 clients and reads the corpus: the worker's own imports
(scikit-learn) then run beside them on another core instead of after them,
which shortens the way to the first model (`learning_service.fit_worker`).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from learning_service.fit_worker import FitWorker
from tagloop.logs import configure_logging

log = logging.getLogger(__name__)

HTTP_THREADS = 4


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Unwind the server loop once; further signals are ignored while shutting down."""
    for name in (signal.SIGTERM, signal.SIGINT):
        signal.signal(name, signal.SIG_IGN)
    log.info("received %s, shutting down", signal.Signals(signum).name)
    sys.exit(0)


def run(host: str, port: int) -> int:
    configure_logging("learning")
    worker = FitWorker()
    worker.start()  # before the imports below: see the module docstring
    from waitress.server import create_server

    from learning_service.app import create_app
    from learning_service.config import LearnerSettings
    from learning_service.learner import Learner
    from learning_service.store import StoreError
    from tagloop.domain.data import DataError
    from tagloop.settings import ConfigError

    try:
        settings = LearnerSettings.from_env()
        learner = Learner.from_settings(settings, worker)
    except (ConfigError, DataError, StoreError, OSError) as error:  # OSError: the data dir
        log.error("cannot start the learning service: %s", error)
        worker.shutdown()
        return 2
    try:
        server = create_server(
            create_app(learner), host=host, port=port, threads=HTTP_THREADS, ident="tagloop"
        )
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", host, port, error)
        learner.stop()
        return 2
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    try:
        learner.start()
        log.info("learning service listening on http://%s:%d", host, port)
        server.run()  # returns after the signal handler's SystemExit
    finally:
        server.close()
        learner.stop()
    log.info("learning service stopped")
    return 0
