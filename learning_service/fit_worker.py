"""The learner's fit worker: one spawned process that fits and scores models.

Fits run outside the learner's process, so the ingest loop never waits for
them or competes with them for the GIL. The worker imports scikit-learn as it
starts (`learning_service.training.worker_init`), which takes seconds; `start`
spawns it without waiting, so `tagloop serve learning` can call it before its
own imports and data loading and the two overlap (the first model is the
critical path of a fresh `tagloop up`). Light to import: nothing here loads
scikit-learn in the learner itself.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")


class FitWorker:
    """One worker process, spawned on `start` or on first use, respawned after a crash."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[int] | None = None

    def start(self) -> None:
        """Spawn the worker now (if not running) and return at once; `ready` waits for it."""
        from learning_service.training import worker_init  # the child's initializer

        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_init,
                initargs=(os.getpid(),),
            )
            self._started = self._pool.submit(os.getpid)

    def ready(self) -> None:
        """Wait until the worker has started (imported scikit-learn); BrokenProcessPool if it
        died doing so."""
        self.start()
        assert self._started is not None
        self._result(self._started)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` in the worker and wait for its result (or exception)."""
        self.start()
        assert self._pool is not None
        return self._result(self._pool.submit(function, *args))

    def _result(self, future: Future[T]) -> T:
        try:
            return future.result()
        except BrokenProcessPool:
            self.shutdown()  # the next call spawns a new worker
            raise

    def kill(self) -> None:
        """Abandon a running fit at shutdown (the worker is this process's only
        multiprocessing child)."""
        for child in multiprocessing.active_children():
            child.kill()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        self._started = None
