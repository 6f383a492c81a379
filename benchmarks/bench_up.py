"""`./dev up` start-up time: a fresh clone to a ready UI (installs included), then a later run.

Clones this checkout's HEAD into a temporary directory, runs `./dev up` there
(which creates .venv from the lock file, then starts every part and trains
the first model), and times it until `tagloop up` prints its ready line;
stops it with SIGINT as Ctrl+C would, and times a second `./dev up` on the
same clone (environment and state in place). Writes
benchmarks/results/up.md and up.json.

    python benchmarks/bench_up.py [--base-port 25000]

Targets (issue 7): first run < 90 s, later runs < 20 s. The first figure
depends on what pip finds in its cache on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
READY = "tagloop is ready at"
TARGETS = {"first": 90.0, "later": 20.0}


def timed_up(clone: Path, base_port: int, log: Path, started: float) -> float:
    """Run ./dev up in its own process group; seconds from `started` to the ready line."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["./dev", "up", "--", "--base-port", str(base_port)],
            cwd=clone,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"},
        )
    try:
        while READY not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise SystemExit(f"bench_up: ./dev up exited early:\n{log.read_text()}")
            if time.monotonic() - started > 600:
                raise SystemExit(f"bench_up: not ready after 600 s:\n{log.read_text()}")
            time.sleep(0.1)
        return time.monotonic() - started
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl+C reaches the whole foreground group
        if process.wait(120) != 0:
            raise SystemExit(f"bench_up: ./dev up did not stop cleanly:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-port", type=int, default=25000, help="as tagloop up")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tagloop-fresh-") as tmp:
        clone = Path(tmp) / "tagloop"
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        results["first"] = timed_up(clone, args.base_port, Path(tmp) / "first.log", started)
        results["later"] = timed_up(
            clone, args.base_port, Path(tmp) / "later.log", time.monotonic()
        )
    report = {"command": command(), "machine": machine(), "seconds": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "up.json").write_text(json.dumps(report, indent=2) + "\n")
    host = report["machine"]
    lines = [
        "# `./dev up` start-up time",
        "",
        f"Command: `{report['command']}` — {host['date']}, {host['cpu']}, {host['cores']} cores,",
        f"Python {host['python']}, load average {host['load_average_1m']} at the end.",
        "",
        "From `git clone` of HEAD to the line `tagloop is ready at ...` (every part ready:",
        "Pub/Sub emulator, S3, learner with its first model, both replicas, UI).",
        "",
        "| run | seconds | target |",
        "| --- | ---: | --- |",
        f"| fresh clone: .venv from the lock (pip cache of this machine), first model trained"
        f" | {results['first']:.1f} | < {TARGETS['first']:.0f} s |",
        f"| later run: same clone, state in ./var | {results['later']:.1f}"
        f" | < {TARGETS['later']:.0f} s |",
    ]
    (RESULTS / "up.md").write_text("\n".join(lines) + "\n")
    print(f"first {results['first']:.1f} s, later {results['later']:.1f} s -> {RESULTS}/up.md")


if __name__ == "__main__":
    main()
