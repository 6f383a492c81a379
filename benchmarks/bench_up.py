"""Bootstrap and start-up time: a fresh clone with empty package caches to `./dev --list`,
then its first `./dev up` until ready (first model trained), then a later `./dev up`.

Clones this checkout's HEAD into a temporary directory and runs there, with
every package cache pointed at an empty temporary directory (uv's and pip's;
pip's machine-wide configuration is ignored, so nothing comes from a local
wheel directory): `./dev --list` creates .venv from the lock, downloading
every package from PyPI. Right after it, the first `./dev up` starts every
part and trains the first model (nothing ran in the clone in between: no
bytecode but what `./dev` compiled at install); it is timed until `tagloop
up` prints its ready line and stopped with SIGINT as Ctrl+C would. At the
ready line the CPU seconds of every part so far are read from /proc (where
the time went). A second `./dev up` on the same clone (environment and state
in place) is timed the same way; then `./dev test:fast` on the warm venv.
Writes benchmarks/results/up.md and up.json.

    flock /work/wt/bench.lock python benchmarks/bench_up.py --base-port 28000 [--baseline REF]

`--baseline REF` also clones REF (an earlier commit) beside it, bootstraps it
(after the first clone: the package caches are warm by then), and runs its
first `./dev up` right after the new one's, then both again on a fresh state
directory (first model, bytecode warm), alternating: on a shared machine only
figures taken side by side under the same load compare.

Targets (issue 12): `./dev --list` <= 60 s from a fresh clone with empty caches,
then `./dev up` ready <= 20 s, and the fast tier <= 60 s. The first figure
depends on the network to PyPI; wall times on a shared machine depend on its
load, CPU seconds much less.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
READY = "tagloop is ready at"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A generous start-up deadline: on a loaded machine the figure, not a timeout.
UP = ("./dev", "up", "--", "--timeout", "900")
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


def _process_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds of the process and its reaped children, command line)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        table[int(entry.name)] = (int(fields[1]), ticks / CLOCK_TICKS, cmdline)
    return table


def part_of(cmdline: str) -> str:
    """The stack part a process belongs to, from its command line."""
    if "multiprocessing.spawn" in cmdline:
        return "learner's fit worker"
    if "tagloop.cli" in cmdline:
        words = cmdline.split("tagloop.cli", 1)[1].split()
        return " ".join(words[:2] if words[0] == "serve" else words[:1])
    for part in ("tagloop up", "supervisord", "weed", "task"):
        if part in cmdline:
            return part
    return "other"


def cpu_by_part(root: int) -> dict[str, float]:
    """CPU seconds so far of every process under `root`, summed per stack part."""
    table = _process_table()
    parts: dict[str, float] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in table:
            _, cpu, cmdline = table[pid]
            parts[part_of(cmdline)] = parts.get(part_of(cmdline), 0.0) + cpu
        pending += [child for child, (parent, _, _) in table.items() if parent == pid]
    return dict(sorted(parts.items(), key=lambda item: -item[1]))


def timed_up(
    clone: Path, env: dict[str, str], base_port: int, log: Path, var_dir: str = "var"
) -> tuple[float, float, dict[str, float]]:
    """Run ./dev up in its own process group; seconds to the ready line, the CPU seconds
    of the whole run (every part, start to stop: each parent reaps its children, so they
    all count), a figure the machine's load barely moves, and the CPU seconds per part
    up to the ready line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [*UP, "--base-port", str(base_port), "--var-dir", var_dir],
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
        parts = cpu_by_part(process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl+C reaches the whole foreground group
        if process.wait(120) != 0:
            raise SystemExit(f"bench_up: ./dev up did not stop cleanly:\n{log.read_text()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ready, cpu, parts


def ready_lines(log: Path) -> list[str]:
    """`tagloop up`'s own lines: when each part answered its readiness probe."""
    return [
        line.strip()
        for line in log.read_text().splitlines()
        if " ready " in line or " alive " in line
    ]


def progress(results: dict[str, float]) -> None:
    """Each figure as soon as it is known (a later failure must not lose it)."""
    load = os.getloadavg()[0]
    print(
        f"{'; '.join(f'{k} {v:.1f} s' for k, v in results.items())} (load {load:.1f})", flush=True
    )


def side_by_side(
    clone: Path,
    baseline: Path,
    env: dict[str, str],
    base_port: int,
    logs: Path,
    first: tuple[float, float],
) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """Rows (run, (wall, CPU) of HEAD, (wall, CPU) of the baseline): HEAD's `first` up (it ran
    just before) beside the baseline's, then both on a fresh state directory twice, in turn."""
    old = timed_up(baseline, env, base_port, logs / "baseline-first.log")
    rows = [("first `./dev up` of the clone", first, old[:2])]
    for n in (1, 2):
        state = f"var-fresh-{n}"
        new = timed_up(clone, env, base_port, logs / f"fresh-{n}.log", state)
        old = timed_up(baseline, env, base_port, logs / f"baseline-fresh-{n}.log", state)
        rows.append((f"`./dev up` on an empty state directory ({n})", new[:2], old[:2]))
        progress({"fresh_state_up": new[0], "baseline_fresh_state_up": old[0]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-port", type=int, default=28000, help="as tagloop up")
    parser.add_argument("--baseline", help="an earlier commit to time side by side")
    args = parser.parse_args()
    results: dict[str, float] = {}
    rows: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="tagloop-fresh-") as tmp:
        clone, logs = Path(tmp) / "tagloop", Path(tmp)
        env = fresh_environment(Path(tmp) / "caches")
        started = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        results["clone"] = time.monotonic() - started
        results["bootstrap"], _ = timed_dev(clone, env, "--list", logs / "list.log")
        progress(results)
        baseline = Path(tmp) / "baseline"
        if args.baseline:
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(baseline)], check=True)
            subprocess.run(
                ["git", "-C", str(baseline), "checkout", "-q", args.baseline], check=True
            )
            timed_dev(baseline, env, "--list", logs / "baseline-list.log")
        results["first_up"], results["first_up_cpu"], parts = timed_up(
            clone, env, args.base_port, logs / "first.log"
        )
        first_lines = ready_lines(logs / "first.log")
        progress(results)
        if args.baseline:
            first = (results["first_up"], results["first_up_cpu"])
            rows = side_by_side(clone, baseline, env, args.base_port, logs, first)
        results["later_up"], results["later_up_cpu"], _ = timed_up(
            clone, env, args.base_port, logs / "later.log"
        )
        progress(results)
        results["fast_tier"], results["fast_tier_cpu"] = timed_dev(
            clone, env, "test:fast", logs / "fast.log"
        )
        progress(results)
        venv_mb = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) >> 20
    host = {**machine(), "load_average_1m_before": load_before}
    report = {
        "command": command(),
        "machine": host,
        "seconds": {name: round(value, 1) for name, value in results.items()},
        "first_up_cpu_by_part_at_ready": {name: round(cpu, 1) for name, cpu in parts.items()},
        "first_up_ready_lines": first_lines,
        "side_by_side": [
            {"run": run, "head": list(new), "baseline": list(old), "baseline_ref": args.baseline}
            for run, new, old in rows
        ],
        "venv_mb": venv_mb,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "up.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "up.md").write_text(markdown(report, results, parts, first_lines, rows, args))
    print("; ".join(f"{k} {v:.1f} s" for k, v in results.items()), f"-> {RESULTS}/up.md")


def markdown(
    report: dict[str, Any],
    results: dict[str, float],
    parts: dict[str, float],
    first_lines: list[str],
    rows: list[tuple[str, tuple[float, float], tuple[float, float]]],
    args: argparse.Namespace,
) -> str:
    host = report["machine"]
    lines = [
        "# Bootstrap and `./dev up` start-up time",
        "",
        f"Command: `flock /work/wt/bench.lock python {report['command']}` — {host['date']},",
        f"{host['cpu']}, {host['cores']} cores, Python {host['python']}; load average",
        f"{host['load_average_1m_before']} before, {host['load_average_1m']} at the end (machine"
        " shared with other work).",
        "",
        "A `git clone` of HEAD with empty package caches (uv's and pip's, pip's machine",
        "configuration ignored): every locked package is downloaded from PyPI. `./dev`",
        "pip-installs the locked uv, `uv pip sync` installs the hash-pinned lock",
        f"({report['venv_mb']} MB venv), then the runtime packages' bytecode is compiled on",
        "every core (tagloop_dev/bytecode.py). The first `./dev up` runs right after it, and",
        "is timed to the line `tagloop is ready at ...` (Pub/Sub emulator, S3, learner with",
        "its first model, both replicas, UI); its CPU seconds count every part from start",
        "to stop. The learner starts with the emulator and S3, the UI and the replicas once",
        "those are ready and the learner is alive; the replicas load the first model when",
        "the learner broadcasts it.",
        "",
        "| step | seconds | target |",
        "| --- | ---: | --- |",
        f"| `git clone` | {results['clone']:.1f} | |",
        f"| `./dev --list` on the fresh clone (.venv from the lock, empty caches)"
        f" | {results['bootstrap']:.1f} | <= {TARGETS['bootstrap']:.0f} s |",
        f"| first `./dev up` (first model trained): wall to ready (CPU seconds, whole run)"
        f" | {results['first_up']:.1f} ({results['first_up_cpu']:.1f} CPU)"
        f" | <= {TARGETS['first_up']:.0f} s |",
        f"| later `./dev up` (same clone, state in ./var): wall to ready (CPU, whole run)"
        f" | {results['later_up']:.1f} ({results['later_up_cpu']:.1f} CPU)"
        f" | <= {TARGETS['later_up']:.0f} s |",
        f"| `./dev test:fast` on the warm venv: wall (CPU seconds, all processes)"
        f" | {results['fast_tier']:.1f} ({results['fast_tier_cpu']:.1f} CPU)"
        f" | <= {TARGETS['fast_tier']:.0f} s |",
        "",
        "Where the first `./dev up` went: `tagloop up`'s lines (seconds since it started), and",
        "the CPU seconds of each part when the ready line appeared (from /proc):",
        "",
        "```",
        *first_lines,
        "```",
        "",
        "| part | CPU seconds at ready |",
        "| --- | ---: |",
        *(f"| {name} | {cpu:.1f} |" for name, cpu in parts.items()),
    ]
    if rows:
        lines += [
            "",
            f"## Side by side with {args.baseline} (same run, alternating)",
            "",
            f"The baseline is a clone of {args.baseline}, bootstrapped after HEAD's (warm package",
            "caches by then), each `up` on the same base port in turn. Wall to ready (CPU",
            "seconds of the whole run); the ratio is HEAD over the baseline.",
            "",
            f"| run | HEAD | {args.baseline} | wall ratio | CPU ratio |",
            "| --- | ---: | ---: | ---: | ---: |",
            *(
                f"| {run} | {new[0]:.1f} ({new[1]:.1f}) | {old[0]:.1f} ({old[1]:.1f})"
                f" | {new[0] / old[0]:.2f} | {new[1] / old[1]:.2f} |"
                for run, new, old in rows
            ),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
