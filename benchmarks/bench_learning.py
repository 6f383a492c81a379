"""Learning-service benchmark (issue 4 targets), the learner run as `tagloop serve learning`.

1. Ingestion: a backlog of feedback messages in the learner's subscription
   (Pub/Sub emulator, the official client), drained by the learner and
   counted as rows durably stored in feedback.csv (fsync'd before the ack),
   once with no fit and once with fits running (TAGLOOP_REFIT_EVERY=1000 on
   the full 18,000-row corpus, so a fit runs for most of the drain). The rate
   "during a fit" counts only the intervals in which /api/status reported a
   fit in progress. Target: >= 1,000 messages/s during a fit.
2. Refit at 23,000 training rows (train.tsv + the 5,000 rows of feedback.tsv):
   from POST /api/retrain until the model-update message arrives on a
   subscription of the model topic, i.e. fit + evaluate on test.tsv + upload
   to S3 (SeaweedFS) + current.json + broadcast. Target: <= 15 s. The gate's
   tolerance is set to 1 so that every candidate goes the whole way; one
   warm-up retrain (fit worker still starting) runs first and is not counted.

Run: ./dev bench:learning [-- --messages 200000 --repeat 3]
Writes benchmarks/results/learning.json and learning.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.channels.bus import Bus
from tagloop.channels.registry import Registry
from tagloop.domain.data import load_labeled
from tagloop.domain.messages import Feedback, parse_model_update
from tagloop_dev.emulator.launcher import EmulatorProcess
from tagloop_dev.launchers import LearnerProcess
from tagloop_dev.s3server import S3Server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TOKEN = "benchmark-admin-token-0123456789"
TOPIC, MODEL_TOPIC, PROJECT = "tag-feedback", "model-updates", "bench"
TARGET_INGEST, TARGET_REFIT = 1000, 15.0
NEVER = str(10**9)


def feedback(count: int, prefix: str) -> list[Feedback]:
    """`count` messages cycling through data/feedback.tsv, each with its own feedback_id."""
    data = load_labeled(ROOT / "data" / "feedback.tsv")
    rows = list(zip(data.titles, data.tags, strict=True))
    return [
        Feedback(
            title=rows[i % len(rows)][0],
            tags=rows[i % len(rows)][1],
            predicted_tags=rows[i % len(rows)][1][:1],
            feedback_id=f"{prefix}-{i}",
        )
        for i in range(count)
    ]


def publish_backlog(bus: Bus, subscription: str, messages: list[Feedback]) -> None:
    path = bus.ensure_topic(TOPIC)
    bus.ensure_subscription(TOPIC, subscription)
    futures = [bus.publisher.publish(path, d, **a) for d, a in (m.to_message() for m in messages)]
    for future in futures:
        future.result(timeout=60)


def learner_log_times(log_path: Path, version: str) -> dict[str, float]:
    """When the learner logged the fit start, the S3 upload and the broadcast of `version`."""
    events = {
        "fitting": "fitting candidate",
        "stored": "stored model version",
        "announced": "announced",
    }
    times = {}
    for line in log_path.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        for name, prefix in events.items():
            if entry.get("version") == version and entry["message"].startswith(prefix):
                times[name] = datetime.fromisoformat(entry["time"]).timestamp()
    return times


class Bench:
    def __init__(self, base_env: dict[str, str], work: Path, bus: Bus) -> None:
        self.base_env = base_env
        self.work = work
        self.bus = bus

    def learner(self, name: str, refit_every: str) -> LearnerProcess:
        """A learner with a data directory and a subscription of its own (one per phase)."""
        env = {
            **self.base_env,
            "TAGLOOP_DATA_DIR": str(self.work / name),
            "TAGLOOP_FEEDBACK_SUBSCRIPTION": name,
            "TAGLOOP_REFIT_EVERY": refit_every,
        }
        return LearnerProcess(env, self.work / f"{name}.log")

    def bootstrap(self) -> float:
        """Start with an empty registry until ready (train.tsv fit promoted)."""
        started = time.perf_counter()
        learner = self.learner("bootstrap", NEVER).start(ready=True, timeout=300)
        seconds = time.perf_counter() - started
        learner.stop()
        return seconds

    def ingest(self, name: str, messages: int, refit_every: str) -> dict:
        publish_backlog(self.bus, name, feedback(messages, name))
        learner = self.learner(name, refit_every).start(ready=False)
        samples: list[tuple[float, int, bool]] = []
        while not samples or samples[-1][1] < messages:
            status = learner.get("/api/status")
            rows, fitting = status["corpus"]["feedback_rows"], status["fit_in_progress"]
            samples.append((time.perf_counter(), rows, fitting))
            time.sleep(0.05)
        fits = learner.metric("tagloop_fit_duration_seconds_count")
        learner.stop()
        first = next(i for i, s in enumerate(samples) if s[1] > 0)
        t0, rows0, _ = samples[max(0, first - 1)]
        t1, rows1, _ = samples[-1]
        during = [
            (b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(samples) if a[2] and b[2]
        ]
        fit_time = sum(dt for dt, _ in during)
        return {
            "messages": messages,
            "seconds": round(t1 - t0, 2),
            "messages_per_second": round((rows1 - rows0) / (t1 - t0)),
            "seconds_with_a_fit_running": round(fit_time, 2),
            "messages_per_second_during_fit": round(sum(n for _, n in during) / fit_time)
            if fit_time
            else None,
            "fits_completed": int(fits),
        }

    def refit(self, registry: Registry, repeat: int) -> dict:
        publish_backlog(self.bus, "refit", feedback(5000, "refit"))
        updates = self.bus.ensure_subscription(MODEL_TOPIC, "bench-updates")
        learner = self.learner("refit", NEVER).start(ready=True)
        while learner.get("/api/status")["corpus"]["feedback_rows"] < 5000:
            time.sleep(0.1)
        runs: list[dict[str, Any]] = []
        for _ in range(repeat + 1):  # the first, with a cold worker, is not counted
            started = time.perf_counter()
            answer = learner.post("/api/retrain", TOKEN)
            answer.raise_for_status()
            update = None
            while update is None:
                for message in self.bus.pull(updates, timeout=1):
                    self.bus.ack(updates, [message.ack_id])
                    candidate = parse_model_update(message.data, message.attributes)
                    if candidate.version not in {r["version"] for r in runs}:
                        update = candidate
            total = time.perf_counter() - started
            meta = registry.get_metadata(update.version)
            logged = learner_log_times(learner.log_path, update.version)
            while "announced" not in logged:  # the message can arrive before the log line
                time.sleep(0.05)
                logged = learner_log_times(learner.log_path, update.version)
            runs.append(
                {
                    "version": update.version,
                    "training_rows": meta["training_rows"],
                    "total_seconds": round(total, 2),
                    "fit_seconds": meta["fit_seconds"],
                    "evaluate_seconds": meta["evaluate_seconds"],
                    "rest_seconds": round(
                        total - meta["fit_seconds"] - meta["evaluate_seconds"], 2
                    ),
                    "learner_fit_start_to_broadcast_seconds": round(
                        logged["announced"] - logged["fitting"], 2
                    ),
                    "learner_stored_to_broadcast_seconds": round(
                        logged["announced"] - logged["stored"], 2
                    ),
                    "f1_macro": round(meta["metrics"]["f1_macro"], 4),
                }
            )
        learner.stop()
        return {
            "warm_up_run": runs[0],
            "runs": runs[1:],
            "median_total_seconds": statistics.median(r["total_seconds"] for r in runs[1:]),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="backlog per ingest run")
    parser.add_argument("--repeat", type=int, default=3, help="refits at 23,000 rows")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp,
        EmulatorProcess() as emulator,
        S3Server(Path(tmp) / "s3", port=0, bucket="bench", log_path=Path(tmp) / "s3.log") as s3,
    ):
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        base_env = {
            **os.environ,
            **s3.env(),
            "TAGLOOP_GCP_PROJECT": PROJECT,
            "TAGLOOP_FEEDBACK_TOPIC": TOPIC,
            "TAGLOOP_MODEL_TOPIC": MODEL_TOPIC,
            "TAGLOOP_TRAIN_DATA": str(ROOT / "data" / "train.tsv"),
            "TAGLOOP_TEST_DATA": str(ROOT / "data" / "test.tsv"),
            "TAGLOOP_MIN_FIT_INTERVAL_SECONDS": "0",
            "TAGLOOP_PROMOTION_TOLERANCE": "1",
            "TAGLOOP_ADMIN_TOKEN": TOKEN,
            "TAGLOOP_LOG_FORMAT": "json",
        }
        bus = Bus(PROJECT)
        bus.ensure_topic(MODEL_TOPIC)
        bench = Bench(base_env, Path(tmp), bus)
        results: dict[str, Any] = {
            "command": command(),
            "machine": machine(),
            "bootstrap_to_ready_seconds": round(bench.bootstrap(), 2),
            "ingest_no_fit": bench.ingest("ingest", args.messages, NEVER),
            "ingest_with_fits": bench.ingest("ingest-fit", args.messages, "1000"),
            "refit_23k": bench.refit(s3.registry(), args.repeat),
        }
        bus.close()
    results["machine"]["load_average_1m_at_end"] = results["machine"].pop("load_average_1m")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "learning.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "learning.md").write_text(render(results))
    print(render(results))


def render(r: dict) -> str:
    m, plain, fits, refit = r["machine"], r["ingest_no_fit"], r["ingest_with_fits"], r["refit_23k"]
    runs = "\n".join(
        f"| {x['training_rows']:,} | {x['total_seconds']} s | {x['fit_seconds']} s | "
        f"{x['evaluate_seconds']} s | {x['rest_seconds']} s | "
        f"{x['learner_fit_start_to_broadcast_seconds']} s | "
        f"{x['learner_stored_to_broadcast_seconds']} s | {x['f1_macro']} |"
        for x in refit["runs"]
    )
    return f"""# Learning-service benchmark

Command: `{r["command"]}` ({m["date"]}), {m["cpu"]}, {m["cores"]} cores, Python {m["python"]},
{m["platform"]}; machine shared with other work (load average {m["load_average_1m_at_end"]} at
the end). The learner ran as `tagloop serve learning` against the Pub/Sub emulator (in memory)
and SeaweedFS, all on this machine.

| what | result | target |
| --- | --- | --- |
| ingestion while a fit runs ({fits["seconds_with_a_fit_running"]} s of fitting, {fits["fits_completed"]} fits) | {fits["messages_per_second_during_fit"]:,} msg/s | >= {TARGET_INGEST:,} msg/s |
| ingestion of {fits["messages"]:,} messages with fits (whole drain) | {fits["messages_per_second"]:,} msg/s | |
| ingestion of {plain["messages"]:,} messages, no fit | {plain["messages_per_second"]:,} msg/s | |
| retrain at {refit["runs"][0]["training_rows"]:,} rows to broadcast received (median of {len(refit["runs"])}) | {refit["median_total_seconds"]} s | <= {TARGET_REFIT:.0f} s |
| first start, empty registry: process start to ready (bootstrap fit on train.tsv) | {r["bootstrap_to_ready_seconds"]} s | |

"Ingestion" counts rows durably stored in feedback.csv (appended per batch, fsync'd, then
acked), polled from `/api/status` every 50 ms; "while a fit runs" counts only intervals in
which a fit was in progress (fits run in a spawned worker process).

Retrain runs (POST /api/retrain until the model-update message is pulled from a subscription
on the model topic; "rest" is scheduling, shipping the corpus to the worker, saving the
bundle, the gate, the S3 upload, current.json and the broadcast):

| training rows | total | fit | evaluate (4,000 test rows) | rest | learner: fit start to broadcast | learner: upload done to broadcast | F1 macro |
| --- | --- | --- | --- | --- | --- | --- | --- |
{runs}
"""


if __name__ == "__main__":
    main()
