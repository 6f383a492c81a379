"""Bootstrap and start-up time: a fresh clone with empty package caches to `./dev --list`,
then `./dev up` until ready (first model trained), then a later `./dev up`.

Clones this checkout's HEAD into a temporary directory and runs there, with
every package cache pointed at an empty temporary directory (uv's and pip's;
pip's machine-wide configuration is ignored, so nothing comes from a local
wheel directory): `./dev --list` creates .venv from the lock, downloading
every package from PyPI. Then `./dev up` starts every part and trains the
first model; it is timed until `tagloop up` prints its ready line and stopped
with SIGINT as Ctrl+C would; a second `./dev up` on the same clone
(environment and state in place) is timed the same way. Writes
benchmarks/results/up.md and up.json.

    flock /work/wt/bench.lock python benchmarks/bench_up.py --base-port 28000

Between the two, `./dev test:fast` (tests/unit) runs on the now warm venv,
timed in wall and CPU seconds.

Targets (issue 12): `./dev --list` <= 60 s from a fresh clone with empty caches,
the fast tier <= 60 s, then `./dev up` ready <= 20 s. The first figure depends
on the network to PyPI; wall times on a shared machine depend on its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
TARGETS = {"bootstrap": 60.0, "fast_tier": 60.0, "first_up": 20.0, "later_up": 20.0}


def fresh_environment(caches: Path) -> dict[str, str]:
    """This environment without the venv, with empty package caches and no pip config."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "VIRTUAL_ENV" and not key.startswith(("PIP_", "UV_"))
    }
    env["PATH"] = os.pathsep.join(
        part for part in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in part + "/"
    )
    return {
        **env,
        "UV_CACHE_DIR": str(caches / "uv"),
        "PIP_CACHE_DIR": str(caches / "pip"),
        "PIP_CONFIG_FILE": os.devnull,
        "XDG_CACHE_HOME": str(caches / "xdg"),
    }


def timed_dev(clone: Path, env: dict[str, str], task: str, log: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, every child) of `./dev <task>` in the clone.

    The CPU figure barely moves with the machine's load; wall time on a
    shared machine does, so both are recorded.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            ["./dev", task], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"bench_up: ./dev {task} failed:\n{log.read_text()[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def timed_up(clone: Path, env: dict[str, str], base_port: int, log: Path) -> tuple[float, float]:
    """Run ./dev up in its own process group; seconds to the ready line, and the CPU seconds
    of the whole run (every part, start to stop: each parent reaps its children, so they
    all count), a figure the machine's load barely moves."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            # A generous start-up deadline: on a loaded machine the figure, not a timeout.
            ["./dev", "up", "--", "--base-port", str(base_port), "--timeout", "900"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while READY not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise SystemExit(f"bench_up: ./dev up exited early:\n{log.read_text()}")
            if time.monotonic() - started > 900:
                raise SystemExit(f"bench_up: not ready after 900 s:\n{log.read_text()}")
            time.sleep(0.1)
        ready = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl+C reaches the whole foreground group
        if process.wait(120) != 0:
            raise SystemExit(f"bench_up: ./dev up did not stop cleanly:\n{log.read_text()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ready, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def progress(results: dict[str, float]) -> None:
    """Each figure as soon as it is known (a later failure must not lose it)."""
    load = os.getloadavg()[0]
    print(
        f"{'; '.join(f'{k} {v:.1f} s' for k, v in results.items())} (load {load:.1f})", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-port", type=int, default=28000, help="as tagloop up")
    args = parser.parse_args()
    results: dict[str, float] = {}
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="tagloop-fresh-") as tmp:
        clone, logs = Path(tmp) / "tagloop", Path(tmp)
        env = fresh_environment(Path(tmp) / "caches")
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        results["clone"] = time.monotonic() - started
        results["bootstrap"], _ = timed_dev(clone, env, "--list", logs / "list.log")
        progress(results)
        results["fast_tier"], results["fast_tier_cpu"] = timed_dev(
            clone, env, "test:fast", logs / "fast.log"
        )
        progress(results)
        results["first_up"], results["first_up_cpu"] = timed_up(
            clone, env, args.base_port, logs / "first.log"
        )
        progress(results)
        results["later_up"], results["later_up_cpu"] = timed_up(
            clone, env, args.base_port, logs / "later.log"
        )
        venv_mb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) >> 20
    host = {**machine(), "load_average_1m_before": load_before}
    report = {
        "command": command(),
        "machine": host,
        "seconds": {name: round(value, 1) for name, value in results.items()},
        "venv_mb": venv_mb,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "up.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Bootstrap and `./dev up` start-up time",
        "",
        f"Command: `flock /work/wt/bench.lock python {report['command']}` — {host['date']},",
        f"{host['cpu']}, {host['cores']} cores, Python {host['python']}; load average",
        f"{load_before} before, {host['load_average_1m']} at the end (machine shared with"
        " other work).",
        "",
        "A `git clone` of HEAD with empty package caches (uv's and pip's, pip's machine",
        "configuration ignored): every locked package is downloaded from PyPI. `./dev`",
        "pip-installs the locked uv, then `uv pip sync` installs the hash-pinned lock",
        f"({venv_mb} MB venv). `./dev up` is timed to the line `tagloop is ready at ...`",
        "(Pub/Sub emulator, S3, learner with its first model, both replicas, UI); its CPU",
        "seconds count every part from start to stop. The emulator and S3 start first;",
        "the learner, the UI and both replicas then start together, the replicas loading",
        "the first model when the learner broadcasts it. `./dev` keeps bytecode in",
        "`.venv/pycache`, written on first import (here by `test:fast` and the first `up`).",
        "",
        "| step | seconds | target |",
        "| --- | ---: | --- |",
        f"| `git clone` | {results['clone']:.1f} | |",
        f"| `./dev --list` on the fresh clone (.venv from the lock, empty caches)"
        f" | {results['bootstrap']:.1f} | <= {TARGETS['bootstrap']:.0f} s |",
        f"| `./dev test:fast` on the warm venv: wall (CPU seconds, all processes)"
        f" | {results['fast_tier']:.1f} ({results['fast_tier_cpu']:.1f} CPU)"
        f" | <= {TARGETS['fast_tier']:.0f} s |",
        f"| first `./dev up` (first model trained): wall to ready (CPU seconds, whole run)"
        f" | {results['first_up']:.1f} ({results['first_up_cpu']:.1f} CPU)"
        f" | <= {TARGETS['first_up']:.0f} s |",
        f"| later `./dev up` (same clone, state in ./var): wall to ready (CPU, whole run)"
        f" | {results['later_up']:.1f} ({results['later_up_cpu']:.1f} CPU)"
        f" | <= {TARGETS['later_up']:.0f} s |",
    ]
    (RESULTS / "up.md").write_text("\n".join(lines) + "\n")
    print("; ".join(f"{k} {v:.1f} s" for k, v in results.items()), f"-> {RESULTS}/up.md")


if __name__ == "__main__":
    main()
