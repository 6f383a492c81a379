"""In-process CPU of one `POST /api/predict` WSGI call: a replica against the bare Flask app.

bench_serving.py measures whole served requests; this isolates what tagloop's
own code costs per call, without gunicorn, sockets or wrk, so that a change to
the replica's request path (middleware, metrics, the model's serving path) can
be judged in seconds. Both apps get the environ gunicorn builds for wrk's
request and are called alternately, in interleaved rounds:

- hot:  `--calls` calls back to back (caches warm: the arithmetic alone);
- cold: a 32 MB memory sweep before each call, as on a busy 2-core machine where
  every served request starts with caches another process flushed (serving.md
  "Where the time goes now": served CPU tracks the cold figure, not the hot one).

Prometheus runs in multiprocess mode (a temporary PROMETHEUS_MULTIPROC_DIR) as
under gunicorn. The model is fitted on data/train.tsv. Prints µs per call per
round and their medians, and replica / bare per round (the two apps measured
seconds apart) and its median; `--json` writes them to a file. The code
measured is that of the tree the script is in, so two checkouts compare by
running each one's copy.

    flock /work/wt/bench.lock python benchmarks/bench_replica_calls.py [--calls 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Before prometheus_client is imported anywhere: the value class is chosen at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-calls-"))

import numpy as np
from machine import command, machine

ROOT = Path(__file__).resolve().parents[1]
TITLE = "how to merge two dictionaries in python"
BODY = json.dumps({"title": TITLE}).encode()
SWEEP = np.ones(32 * 2**20 // 8)
"""32 MB, more than the machine's last-level cache."""

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ() -> dict[str, Any]:
    """The environ gunicorn builds for wrk's keep-alive `POST /api/predict`."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/predict",
        "RAW_URI": "/api/predict",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "gunicorn/23.0.0",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.input_terminated": True,
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": None,
    }


def call(app: WsgiApp) -> tuple[str, bytes]:
    """One WSGI call as a server makes it: start_response, then the body joined and closed."""
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)

    answer = app(environ(), start_response)
    try:
        body = b"".join(answer)
    finally:
        close = getattr(answer, "close", None)
        if close is not None:
            close()
    return status[0], body


def per_call_us(app: WsgiApp, calls: int, cold: bool) -> float:
    spent = 0
    for _ in range(calls):
        if cold:
            SWEEP.sum()
        started = time.process_time_ns()
        call(app)
        spent += time.process_time_ns() - started
    return spent / calls / 1000


def apps() -> dict[str, WsgiApp]:
    """The bare Flask app and a replica serving a model fitted on data/train.tsv."""
    # This tree's code, even where another checkout is installed (comparing two trees).
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    import bare_flask

    from inference_service.app import create_app
    from inference_service.config import InferenceSettings
    from inference_service.model_holder import LoadedModel
    from inference_service.runtime import Runtime
    from tagloop.domain.data import load_labeled
    from tagloop.domain.model import TagModel

    data = load_labeled(ROOT / "data" / "train.tsv")
    model = TagModel().fit(data.titles, data.tags)
    settings = InferenceSettings.from_env({})
    runtime = Runtime(settings)
    replica = create_app(settings, runtime)
    runtime.holder.swap(
        LoadedModel(model=model, version="bench", metadata={}, loaded_at="", loaded_at_unix=0.0)
    )
    found: dict[str, WsgiApp] = {
        "bare": bare_flask.create_app().wsgi_app,
        "replica": replica.wsgi_app,
    }
    for name, app in found.items():
        status, _ = call(app)
        if not status.startswith("200"):
            raise RuntimeError(f"{name} answered {status}")
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    served = apps()
    runs: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for cold in (False, True):
            calls = args.calls if not cold else max(1, args.calls // 5)
            for name, app in served.items():
                key = f"{name} {'cold' if cold else 'hot'}"
                runs.setdefault(key, []).append(round(per_call_us(app, calls, cold), 1))
    medians = {key: statistics.median(values) for key, values in runs.items()}
    # Per round, replica / bare of that round (both measured seconds apart): the figure
    # that machine contention moves least.
    ratios = {
        kind: [
            round(replica / bare, 2)
            for replica, bare in zip(runs[f"replica {kind}"], runs[f"bare {kind}"], strict=True)
        ]
        for kind in ("hot", "cold")
    }
    return {
        "command": command(),
        "machine": machine(),
        "runs": runs,
        "medians": medians,
        "replica_over_bare": ratios,
        "replica_over_bare_median": {k: statistics.median(v) for k, v in ratios.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="hot calls per round (cold: 1/5)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args)
    for key, values in result["runs"].items():
        print(f"{key:14} median {result['medians'][key]:7.1f} µs  rounds {values}")
    for kind, ratios in result["replica_over_bare"].items():
        median = result["replica_over_bare_median"][kind]
        print(f"replica / bare {kind}: median {median:.2f}, rounds {ratios}")
    print("load average (1 min):", result["machine"]["load_average_1m"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
