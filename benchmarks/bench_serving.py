"""What tagloop's HTTP path costs over the framework's floor (issue 19), slow-client protection on.

Side by side in one run, on the same gunicorn settings (tagloop's buffered
gthread worker, TAGLOOP_WORKERS x TAGLOOP_THREADS, keep-alive, preload):

- bare:        a bare Flask endpoint returning a predict-like JSON body (bare_flask.py);
- replica:     `POST /api/predict` on a real replica (`tagloop serve inference`);
- ui+replica:  the same through the UI server's `/api/*` proxy (`tagloop serve ui`);
- ui+bare:     with `--ui-over-bare`, a second UI in front of the bare app: the UI hop
  alone is its cost minus bare's;
- bare in main loop: with `--bare-main-loop`, the bare endpoint answered in the worker's
  main loop as the replica's predictions are (tagloop/web/main_loop.py): a reference row
  that separates what the app costs from what the framing saves (the target compares
  against the plain `bare`);
- replica / ui+replica under attack: the same while 20 slow-header and 100 idle
  connections are held against the server under test (tagloop_dev.slow_clients).

Load: wrk, `--connections` keep-alive connections, 2 threads, `--seconds` per
phase, phases interleaved for `--rounds` rounds so that machine contention hits
each alike. Server CPU per request is user+system time of every server process
(gunicorn masters and workers, from /proc) over the phase divided by the
requests wrk completed. Writes benchmarks/results/serving.md and .json.

    flock /work/wt/bench.lock python benchmarks/bench_serving.py [--seconds 6] [--rounds 3]
        [--ui-over-bare] [--bare-main-loop]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

from bench_inference import process_cpu_seconds, replica_env, start_replica
from machine import command, machine

from inference_service.feedback import RATE_LIMIT_FILE, RateLimiter, SharedRateLimiter
from tagloop.domain.bundle import save_bundle
from tagloop.domain.data import load_labeled
from tagloop.domain.model import TagModel
from tagloop.web.wsgi_server import BUFFERED_WORKER
from tagloop_dev.emulator.launcher import EmulatorProcess
from tagloop_dev.processes import free_port
from tagloop_dev.s3server import S3Server
from tagloop_dev.slow_clients import hostile_clients

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TITLE = "how to merge two dictionaries in python"
WRK_SCRIPT = f"""wrk.method = "POST"
wrk.body = '{json.dumps({"title": TITLE})}'
wrk.headers["Content-Type"] = "application/json"
"""
TARGET_DIRECT, TARGET_UI = 1.2, 2.4
NOTES = "<!-- Notes below this line are written by hand; bench_serving.py keeps them. -->"


def wait_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@contextmanager
def serving(argv: list[str], env: dict[str, str], health_url: str) -> Iterator[int]:
    """A server process until the block ends; yields its pid."""
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        wait_healthy(process, health_url)
        yield process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bare_argv(port: int, workers: int, threads: int, main_loop: bool = False) -> list[str]:
    """The bare app on the replica's gunicorn settings (inference_service/gunicorn.conf.py)."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--chdir",
        str(ROOT / "benchmarks"),
        "--worker-class",
        BUFFERED_WORKER,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--keep-alive",
        "15",
        "--preload",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        f"bare_flask:create_app(main_loop={main_loop})",
    ]


def browser_cookie(ui_url: str) -> str:
    """The `name=value` of the annotator cookie the UI sets on a browser's first page load."""
    with urllib.request.urlopen(ui_url + "/", timeout=10) as answer:
        cookie = answer.headers["Set-Cookie"]
    return str(cookie).partition(";")[0]


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "requests_per_s": round(requests / seconds, 1),
        "p50_ms": round(_ms(percentiles["50"]), 2),
        "p99_ms": round(_ms(percentiles["99"]), 2),
    }


def phase(
    url: str, pids: list[int], script: Path, args: argparse.Namespace, attack: str | None
) -> dict[str, float]:
    load = os.getloadavg()[0]
    with hostile_clients(attack) if attack else nullcontext():
        before = sum(process_cpu_seconds(pid) for pid in pids)
        result = wrk(url, script, args.connections, args.seconds)
        cpu = sum(process_cpu_seconds(pid) for pid in pids) - before
    return result | {
        "server_cpu_us_per_request": round(cpu / max(1, result["requests"]) * 1e6, 1),
        "load_average_1m_before": round(load, 2),
    }


def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    data = load_labeled(ROOT / "data" / "train.tsv")
    tagloop = str(Path(sys.executable).with_name("tagloop"))
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        script = root / "predict.lua"
        script.write_text(WRK_SCRIPT)
        save_bundle(TagModel().fit(data.titles, data.tags), root / "bundle")
        s3 = stack.enter_context(S3Server(root / "s3", port=0, bucket="bench-models"))
        emulator = stack.enter_context(EmulatorProcess())
        env = {
            **replica_env(root, s3, emulator, args.workers),
            "TAGLOOP_THREADS": str(args.threads),
        }
        replica_port, bare_port = free_port(), free_port()
        replica = start_replica(env, replica_port)
        stack.callback(stop, replica)
        bare = stack.enter_context(_bare(bare_port, args))
        ui_env = env | {
            "TAGLOOP_UNLABELED_DATA": str(ROOT / "data" / "unlabeled.tsv"),
            # One key for every UI here, so that the browser cookie below is good for each.
            "TAGLOOP_UI_ANNOTATOR_SECRET": "bench-serving-" * 3,
        }
        ui_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        bare_url = f"http://127.0.0.1:{bare_port}"
        replica_url = f"http://127.0.0.1:{replica_port}"
        ui_url, ui = stack.enter_context(_ui(tagloop, ui_env, replica_url))
        phases = {
            "bare": (bare_url, [bare], None),
            "replica": (replica_url, [replica.pid], None),
            "ui+replica": (ui_url, [ui, replica.pid], None),
            "replica under attack": (replica_url, [replica.pid], replica_url),
            "ui+replica under attack": (ui_url, [ui, replica.pid], ui_url),
        }
        if args.ui_over_bare:
            ui_bare_url, ui_bare = stack.enter_context(_ui(tagloop, ui_env, bare_url))
            phases["ui+bare"] = (ui_bare_url, [ui_bare, bare], None)
        if args.bare_main_loop:
            looped_port = free_port()
            looped = stack.enter_context(_bare(looped_port, args, main_loop=True))
            phases["bare in main loop"] = (f"http://127.0.0.1:{looped_port}", [looped], None)
        # Through the UI as a browser calls it: with the annotator cookie its first visit got.
        ui_script = root / "predict-ui.lua"
        ui_script.write_text(WRK_SCRIPT + f'wrk.headers["Cookie"] = "{browser_cookie(ui_url)}"\n')
        scripts = {name: ui_script if name.startswith("ui") else script for name in phases}
        for name, (url, _, _) in phases.items():  # warm-up: imports, model, connection pools
            wrk(url + "/api/predict", scripts[name], args.connections, 1)
            results[name] = []
        for round_ in range(args.rounds):
            for name, (url, pids, attack) in phases.items():
                results[name].append(phase(url + "/api/predict", pids, scripts[name], args, attack))
                print(round_, name, json.dumps(results[name][-1]), flush=True)
    return results


@contextmanager
def _ui(tagloop: str, env: dict[str, str], upstream: str) -> Iterator[tuple[str, int]]:
    """A UI server in front of `upstream`; yields its URL and pid."""
    port = free_port()
    with serving(
        [tagloop, "serve", "ui", "--host", "127.0.0.1", "--port", str(port)],
        env | {"TAGLOOP_UI_UPSTREAMS": upstream},
        f"http://127.0.0.1:{port}/healthz",
    ) as pid:
        yield f"http://127.0.0.1:{port}", pid


@contextmanager
def _bare(port: int, args: argparse.Namespace, main_loop: bool = False) -> Iterator[int]:
    """The bare app; ready once it answers a prediction."""
    process = subprocess.Popen(
        bare_argv(port, args.workers, args.threads, main_loop),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/predict",
                data=json.dumps({"title": TITLE}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield process.pid
    finally:
        stop(process)


def limiter_cost(calls: int = 20_000) -> dict[str, float]:
    """CPU µs per feedback rate-limit check: per-process buckets vs the replica-wide table."""
    costs = {}
    with tempfile.TemporaryDirectory(prefix="bench-limiter-") as tmp:
        for limiter in (
            RateLimiter(1e9, 10**9),
            SharedRateLimiter(Path(tmp) / RATE_LIMIT_FILE, 1e9, 10**9),
        ):
            limiter.acquire("warm-up")
            started = time.process_time()
            for i in range(calls):
                limiter.acquire(f"10.0.{i % 250}.1")
            costs[type(limiter).__name__] = round((time.process_time() - started) / calls * 1e6, 1)
    return costs


def summary(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each figure, and CPU per request relative to bare Flask."""
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in results.items()
    }
    floor = medians["bare"]["server_cpu_us_per_request"]
    for figures in medians.values():
        figures["cpu_vs_bare"] = round(figures["server_cpu_us_per_request"] / floor, 2)
    return medians


def write(
    results: dict[str, list[dict[str, float]]],
    limiter: dict[str, float],
    args: argparse.Namespace,
) -> None:
    info, medians = machine(), summary(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(
        json.dumps(
            {
                "command": command(),
                "machine": info,
                "rounds": results,
                "median": medians,
                "rate_limit_check_cpu_us": limiter,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        "# Serving cost over bare Flask (issue 19), slow-client protection on",
        "",
        f"Command: `flock /work/wt/bench.lock python {command()}`",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['platform']}; load average (1 min) at the end {info['load_average_1m']}, "
        "other engineers' work running on the same 2 cores.",
        f"Load: wrk, 2 threads, {args.connections} keep-alive connections, {args.seconds:g} s per "
        f"phase, {args.rounds} interleaved rounds; gunicorn {args.workers} workers x "
        f"{args.threads} threads, buffered gthread worker, for every server. Under attack: 20 "
        "slow-header + 100 idle connections held against the server under test.",
        "",
        "Medians over the rounds (every round is in serving.json):",
        "",
        "| phase | server CPU µs/request | x bare | req/s | p50 ms | p99 ms | errors | load 1m |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in medians.items():
        lines.append(
            f"| {name} | {m['server_cpu_us_per_request']:.0f} | {m['cpu_vs_bare']:.2f} | "
            f"{m['requests_per_s']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['errors']:.0f} | {m['load_average_1m_before']:.2f} |"
        )
    lines += [
        "",
        f"Targets: replica <= {TARGET_DIRECT}x bare; ui+replica <= {TARGET_UI}x bare.",
        "",
        "Feedback rate-limit check, CPU µs per call (in-process, 20,000 calls over 250 "
        f"clients): per-process buckets {limiter['RateLimiter']}, replica-wide SQLite table "
        f"{limiter['SharedRateLimiter']} (only `POST /api/feedback` pays it).",
        "",
    ]
    (RESULTS / "serving.md").write_text("\n".join(lines) + _notes(RESULTS / "serving.md"))


def _notes(path: Path) -> str:
    """The hand-written analysis under `NOTES` in the previous file (a new run only
    replaces the figures above it)."""
    previous = path.read_text() if path.exists() else ""
    _, marker, notes = previous.partition(NOTES)
    return f"{NOTES}{notes}" if marker else f"{NOTES}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--ui-over-bare", action="store_true", help="also measure a UI in front of the bare app"
    )
    parser.add_argument(
        "--bare-main-loop",
        action="store_true",
        help="also measure the bare endpoint answered in the worker's main loop",
    )
    args = parser.parse_args()
    limiter = limiter_cost()
    results = run(args)
    write(results, limiter, args)
    print((RESULTS / "serving.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
