"""Local S3 server start-up/stop times and model-registry latencies (issue 3).

Start-up: from launching `weed mini` until the S3 API accepts our
credentials and the bucket exists (what `tagloop s3-server` and the test
fixture wait for), on a fresh data directory and on a restart of an existing
one. Stop: SIGTERM until the process has exited. Registry: put_version,
fetch (with sha256 verification), set_current, current_version and
list_versions over boto3 with an artifact the size of a real bundle (2-12 MB). Medians over
`--repeat` runs. Writes benchmarks/results/s3.md and .json.

    python benchmarks/bench_s3.py [--repeat 5] [--artifact-mb 12] [--versions 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from machine import command, machine

from tagloop.channels.registry import new_version
from tagloop_dev.s3server import S3Server

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "bench-models"
PROMOTED = {"promoted": True, "reason": "benchmark"}


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def lifecycle(root: Path, repeat: int) -> dict[str, list[float]]:
    """Cold start, restart on the same data, and stop, `repeat` times each."""
    times: dict[str, list[float]] = {"cold_start_s": [], "restart_s": [], "stop_s": []}
    for run in range(repeat):
        data = root / f"lifecycle-{run}"
        for phase in ("cold_start_s", "restart_s"):
            server = S3Server(data, port=0, bucket=BUCKET, log_path=root / f"weed-{run}.log")
            times[phase].append(timed(server.start))
            times["stop_s"].append(timed(server.stop))
    return times


def registry_latencies(
    server: S3Server, root: Path, repeat: int, artifact_mb: int, versions: int
) -> dict[str, list[float]]:
    registry = server.registry()
    bundle = root / "bundle"
    bundle.mkdir()
    (bundle / "model.npz").write_bytes(os.urandom(artifact_mb << 20))
    times: dict[str, list[float]] = {
        name: [] for name in ("put_version_s", "fetch_s", "set_current_s", "current_version_s")
    }
    for run in range(max(repeat, versions)):
        version = new_version()
        times["put_version_s"].append(
            timed(partial(registry.put_version, version, bundle, {"decision": PROMOTED}))
        )
        if run < repeat:
            times["fetch_s"].append(timed(partial(registry.fetch, version, root / version)))
            times["set_current_s"].append(timed(partial(registry.set_current, version)))
            times["current_version_s"].append(timed(registry.current_version))
    times["list_versions_s"] = [timed(registry.list_versions) for _ in range(repeat)]
    return times


def summarise(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 4) for name, values in samples.items()}


def render(report: dict) -> str:
    info = report["machine"]
    rows = "\n".join(
        f"| {name.removesuffix('_s').replace('_', ' ')} | {seconds * 1000:.0f} ms |"
        for name, seconds in report["medians"].items()
    )
    return f"""# Local S3 server (SeaweedFS `weed mini`) and model registry

- command: `{report["command"]}`
- machine: {info["cores"]} cores ({info["cpu"]}), load {info["load_average_1m"]}, \
Python {info["python"]}, {info["platform"]}, {info["date"]}
- runs: median of {report["repeat"]}; artifact {report["artifact_mb"]} MiB; \
list_versions over {report["versions"]} versions

| measurement | median |
| --- | --- |
{rows}

Start-up counts from launching `weed mini` until the S3 API accepts the
configured keys and the bucket exists, which is what `tagloop s3-server` and
the test fixture wait for. The local stack's budget is 20 s for everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--artifact-mb", type=int, default=12)
    parser.add_argument("--versions", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        root = Path(tmp)
        samples = lifecycle(root, args.repeat)
        with S3Server(root / "registry", port=0, bucket=BUCKET, log_path=root / "weed.log") as s3:
            samples |= registry_latencies(s3, root, args.repeat, args.artifact_mb, args.versions)
    report = {
        "command": command(),
        "machine": machine(),
        "repeat": args.repeat,
        "artifact_mb": args.artifact_mb,
        "versions": args.versions,
        "medians": summarise(samples),
        "samples": {name: [round(v, 4) for v in values] for name, values in samples.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "s3.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "s3.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
