"""Pub/Sub emulator throughput with the official client (issue 3 targets).

Publish: messages/s from the first `publish()` until every future has the
server's message id (the client's default batching). Streaming pull:
messages/s from `subscribe()` until the callback has seen (and acked) every
message. Both in memory and with `--data-dir` (fsync'd), each repeated and
reported as the median. Writes benchmarks/results/pubsub.md and .json.

    python benchmarks/bench_pubsub.py [--messages 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from google.cloud import pubsub_v1

from tagloop.domain.messages import Feedback
from tagloop_dev.emulator.launcher import EmulatorProcess

RESULTS = Path(__file__).parent / "results"
TARGETS = {"memory": 5000, "data-dir": 2000}  # messages/s, each way
PROJECT = "bench"


def machine() -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def payload() -> tuple[bytes, dict[str, str]]:
    """A realistic message: one user's feedback (about 250 bytes of JSON)."""
    return Feedback(
        title="How to draw a stacked dotplot in R with ggplot2?",
        tags=["r", "ggplot2"],
        predicted_tags=["r"],
        model_version="20261122T051500123Z-1a2b3c",
    ).to_message()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(emulator: EmulatorProcess, run: int, messages: int) -> dict[str, float]:
    assert emulator.process is not None
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/bench-{run}").name
    subscription = subscriber.create_subscription(
        name=f"projects/{PROJECT}/subscriptions/bench-{run}", topic=topic
    ).name
    data, attributes = payload()
    emulator_cpu, client_cpu = cpu_seconds(emulator.process.pid), time.process_time()

    started = time.perf_counter()
    futures = [publisher.publish(topic, data, **attributes) for _ in range(messages)]
    ids = {future.result(timeout=300) for future in futures}
    publish_seconds = time.perf_counter() - started

    seen: set[str] = set()
    duplicates = 0
    lock = threading.Lock()
    done = threading.Event()

    def on_message(message: pubsub_v1.subscriber.message.Message) -> None:
        nonlocal duplicates
        message.ack()
        with lock:
            if message.message_id in seen:
                duplicates += 1
            seen.add(message.message_id)
            if len(seen) == messages:
                done.set()

    started = time.perf_counter()
    future = subscriber.subscribe(subscription, on_message)
    if not done.wait(timeout=300):
        raise RuntimeError(f"only {len(seen)} of {messages} messages arrived")
    pull_seconds = time.perf_counter() - started
    emulator_cpu = cpu_seconds(emulator.process.pid) - emulator_cpu
    client_cpu = time.process_time() - client_cpu
    future.cancel()
    future.result()
    publisher.stop()
    subscriber.close()
    if seen != ids:
        raise RuntimeError("the messages received differ from the ones published")
    return {
        "publish_per_s": messages / publish_seconds,
        "streaming_pull_per_s": messages / pull_seconds,
        "duplicates": duplicates,
        # CPU per 1,000 messages published and pulled, emulator vs client process
        "emulator_cpu_ms_per_1000": 1e6 * emulator_cpu / messages,
        "client_cpu_ms_per_1000": 1e6 * client_cpu / messages,
    }


def bench_mode(mode: str, messages: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as tmp:
        data_dir = Path(tmp) if mode == "data-dir" else None
        with EmulatorProcess(data_dir=data_dir) as emulator:
            runs = [run_once(emulator, i, messages) for i in range(repeat)]
    summary: dict[str, object] = {
        key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "duplicates"
    }
    summary["duplicates"] = sum(r["duplicates"] for r in runs)
    summary["runs"] = runs
    return summary


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pubsub.json").write_text(json.dumps(report, indent=2) + "\n")
    info = report["machine"]
    lines = [
        "# Pub/Sub emulator throughput",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"{info['platform']}",
        f"- load average before / after: {report['load_before']} / {report['load_after']}",
        f"- {report['messages']} messages of {report['payload_bytes']} bytes per run, "
        f"median of {report['repeat']} runs; client: google-cloud-pubsub "
        f"{report['client_version']} with default batching and flow control; the emulator "
        "runs in its own process",
        "",
        "| mode | publish msg/s | streaming pull msg/s | target each way | met "
        "| emulator CPU ms / 1000 msgs | client CPU ms / 1000 msgs | redeliveries |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for mode, result in report["results"].items():
        met = min(result["publish_per_s"], result["streaming_pull_per_s"]) >= TARGETS[mode]
        lines.append(
            f"| {mode} | {result['publish_per_s']:,.0f} | {result['streaming_pull_per_s']:,.0f} "
            f"| {TARGETS[mode]:,} | {'yes' if met else 'NO'} "
            f"| {result['emulator_cpu_ms_per_1000']:.0f} | {result['client_cpu_ms_per_1000']:.0f} "
            f"| {result['duplicates']} |"
        )
    lines += [
        "",
        "Client and emulator share the machine's cores, so the rates include the client",
        "library's own work; the CPU columns split one message's cost (publish + pull + ack)",
        "between the two processes.",
    ]
    if report["load_before"][0] >= 0.5 * (info["cpus"] or 1):
        lines += [
            "",
            "Contended: other work was using the CPUs during this run (see the load average),",
            "so these rates understate what an idle machine gives.",
        ]
    if report.get("note"):
        lines += ["", report["note"]]
    (out / "pubsub.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--note", default="", help="free text for the report (e.g. machine load)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = {mode: bench_mode(mode, args.messages, args.repeat) for mode in TARGETS}
    report = {
        "command": shlex.join(["python", "benchmarks/bench_pubsub.py", *(argv or sys.argv[1:])]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "messages": args.messages,
        "repeat": args.repeat,
        "payload_bytes": len(payload()[0]),
        "client_version": importlib.metadata.version("google-cloud-pubsub"),
        "targets_per_s": TARGETS,
        "results": results,
        "note": args.note,
    }
    write_report(report, args.out)
    for mode, result in results.items():
        print(
            f"{mode:>8}: publish {result['publish_per_s']:,.0f} msg/s, "
            f"streaming pull {result['streaming_pull_per_s']:,.0f} msg/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
