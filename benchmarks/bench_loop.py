"""Continuous-learning benchmark: does feedback make the served model better, and how fast?

Replays data/feedback.tsv through the UI's POST /api/feedback of a running
local stack, N corrections at a time (N = the learner's TAGLOOP_REFIT_EVERY,
100 by default). After each batch it waits for the learner's decision on the
candidate that the batch triggered and, when the candidate is promoted, for
both replicas to serve it. It records, per candidate, the test-set metrics
against the corpus size, and the freshness: the time from the N-th
correction's 202 to the moment both replicas answer GET /api/model with the
new version. Waiting for each batch keeps the freshness of one model from
including the queue of the next.

Start a fresh stack with the feedback rate limit raised (one client sends
5,000 corrections; the default 5/s per client would throttle the replay):

    ./dev reset && TAGLOOP_FEEDBACK_RATE=1000 TAGLOOP_FEEDBACK_BURST=1000 ./dev up
    ./dev bench:loop              # another terminal; or: python benchmarks/bench_loop.py

Writes benchmarks/results/loop.csv, loop.md and loop.png.
Targets (issue 7): F1 macro rises as the 5,000 samples arrive; freshness p50 <= 20 s.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.domain.data import load_labeled
from tagloop_dev.stack.config import DEFAULT_BASE_PORT, Ports

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METRICS: tuple[str, ...] = ("f1_macro", "f1_micro", "f1_weighted", "accuracy")
METRICS += ("average_precision_macro", "roc_auc_macro", "hamming_loss")
FRESHNESS_TARGET = 20.0
TREND_WINDOW = 5  # candidates averaged at each end of the replay
POLL = 0.05


@dataclass
class Row:
    """One model: the bootstrap one, then one per candidate a batch triggered."""

    feedback_sent: int
    version: str
    promoted: bool
    reason: str
    training_rows: int
    freshness_seconds: float | None
    f1_macro: float
    f1_micro: float
    f1_weighted: float
    accuracy: float
    average_precision_macro: float
    roc_auc_macro: float
    hamming_loss: float


class Stack:
    """The HTTP endpoints of a running stack (contract ports shifted by --base-port)."""

    def __init__(self, base_port: int) -> None:
        ports = Ports.from_base(base_port)
        self.ui = f"http://127.0.0.1:{ports.ui}"
        self.learner = f"http://127.0.0.1:{ports.learning}"
        self.replicas = [f"http://127.0.0.1:{port}" for port in ports.inference]
        self.http = requests.Session()

    def get(self, url: str) -> Any:
        answer = self.http.get(url, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def status(self) -> dict[str, Any]:
        return self.get(f"{self.learner}/api/status")

    def metadata(self, version: str) -> dict[str, Any]:
        models = self.get(f"{self.learner}/api/models")["models"]
        return next(model for model in models if model["version"] == version)

    def served(self) -> list[str | None]:
        versions = []
        for url in self.replicas:
            answer = self.http.get(f"{url}/api/model", timeout=10)
            versions.append(answer.json()["version"] if answer.status_code == 200 else None)
        return versions

    def send(self, title: str, tags: list[str]) -> bool:
        """POST one correction; True on 202, False if refused as invalid. Retries 429/503."""
        body = {"title": title, "tags": tags, "feedback_id": str(uuid.uuid4())}
        for _ in range(20):
            answer = self.http.post(f"{self.ui}/api/feedback", json=body, timeout=30)
            if answer.status_code == 202:
                return True
            if answer.status_code in {429, 503}:
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            if 400 <= answer.status_code < 500:
                return False
            answer.raise_for_status()
        raise RuntimeError(f"feedback kept being refused: {answer.status_code} {answer.text}")


def wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(POLL)
    return value


def row(stack: Stack, sent: int, version: str, freshness: float | None) -> Row:
    meta = stack.metadata(version)
    decision = meta.get("decision") or {}
    return Row(
        feedback_sent=sent,
        version=version,
        promoted=bool(decision.get("promoted")),
        reason=str(decision.get("reason", "")),
        training_rows=int(meta["training_rows"]),
        freshness_seconds=None if freshness is None else round(freshness, 3),
        **{name: float(meta["metrics"][name]) for name in METRICS},
    )


def replay(stack: Stack, limit: int, timeout: float) -> tuple[list[Row], int]:
    status = stack.status()
    if status["corpus"]["feedback_rows"]:
        raise SystemExit("bench_loop: the learner already has feedback: run ./dev reset, then up")
    batch = int(status["refit_every"])
    decided = (status["last_decision"] or {}).get("version")
    rows = [row(stack, 0, status["current_version"], None)]
    data = load_labeled(ROOT / "data" / "feedback.tsv")
    pairs = list(zip(data.titles, data.tags, strict=True))[:limit]
    sent = accepted = 0
    while len(pairs) - sent >= batch:
        in_batch = 0
        while in_batch < batch and sent < len(pairs):
            in_batch += stack.send(*pairs[sent])
            sent += 1
        if in_batch < batch:
            break  # the rest was refused as invalid: not enough left for a refit
        accepted += batch
        last_202 = time.monotonic()

        def decision(previous: str | None = decided) -> dict[str, Any] | None:
            status = stack.status()
            latest = status["last_decision"] or {}
            if latest.get("version") not in {None, previous} and not status["fit_in_progress"]:
                return latest
            return None

        latest = wait(decision, timeout, f"decision after {accepted} corrections")
        decided = latest["version"]
        freshness = None
        if latest["promoted"]:
            everywhere = [decided] * len(stack.replicas)
            wait(lambda target=everywhere: stack.served() == target, timeout, "both replicas")
            freshness = time.monotonic() - last_202
        rows.append(row(stack, accepted, decided, freshness))
        shown = "not promoted" if freshness is None else f"served by all after {freshness:.1f} s"
        print(
            f"{accepted:>5} corrections: {decided} f1_macro {rows[-1].f1_macro:.4f} "
            f"({rows[-1].training_rows} rows), {shown}",
            flush=True,
        )
    return rows, batch


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(item) for item in rows)


def trend(rows: list[Row], metric: str) -> float:
    """Least-squares slope of `metric` per 1,000 corrections: one refit's noise averages out.
    (Per correction, not per corpus row: with a training window the corpus stops growing.)"""
    slope = statistics.linear_regression(
        [item.feedback_sent for item in rows], [getattr(item, metric) for item in rows]
    ).slope
    return slope * 1000


def summary(rows: list[Row]) -> dict[str, Any]:
    fresh = [item.freshness_seconds for item in rows if item.freshness_seconds is not None]
    promoted = [item for item in rows if item.promoted]
    window = max(1, min(TREND_WINDOW, (len(rows) - 1) // 2))
    return {
        "candidates": len(rows) - 1,
        "promoted": len(promoted) - 1,
        "freshness_p50": statistics.median(fresh) if fresh else None,
        "freshness_max": max(fresh) if fresh else None,
        "f1_first": rows[0].f1_macro,
        "f1_last": promoted[-1].f1_macro,
        "f1_best": max(item.f1_macro for item in promoted),
        "window": window,
        "f1_early": statistics.mean(item.f1_macro for item in rows[1 : window + 1]),
        "f1_late": statistics.mean(item.f1_macro for item in rows[-window:]),
        "trends": {name: trend(rows, name) for name in METRICS if name != "hamming_loss"},
    }


def write_markdown(
    rows: list[Row], batch: int, facts: dict[str, Any], base_port: int, stack_env: str, path: Path
) -> None:
    host = machine()
    p50, worst = facts["freshness_p50"], facts["freshness_max"]
    trends, window = facts["trends"], facts["window"]
    ports = "" if base_port == DEFAULT_BASE_PORT else f" -- --base-port {base_port}"
    lines = [
        "# Continuous-learning benchmark",
        "",
        f"Command: `{command()}` against `{stack_env}TAGLOOP_FEEDBACK_RATE=1000"
        f" TAGLOOP_FEEDBACK_BURST=1000 ./dev up{ports}` (fresh state, every other setting at its"
        f" default) — {host['date']},",
        f"{host['cpu']}, {host['cores']} cores, Python {host['python']},"
        f" load average {host['load_average_1m']} at the end.",
        "",
        f"data/feedback.tsv replayed through the UI's `POST /api/feedback` in batches of N = {batch}"
        " (TAGLOOP_REFIT_EVERY); after each batch the benchmark waits for the learner's decision"
        " and, if promoted, for both replicas to serve the new version. Freshness: from the N-th"
        " correction's 202 to both replicas answering with the new version. Metrics: the fixed"
        " test set (data/test.tsv, 4,000 rows). Plot: `loop.png`; every value: `loop.csv`.",
        "",
        "| what | result | target |",
        "| --- | --- | --- |",
        f"| F1 macro trend, least squares over every model | {trends['f1_macro']:+.4f} per"
        " 1,000 corrections | rises (> 0) |",
        f"| F1 macro, mean of the first {window} -> last {window} candidates |"
        f" {facts['f1_early']:.4f} -> {facts['f1_late']:.4f} | |",
        f"| F1 macro, bootstrap model -> last promoted | {facts['f1_first']:.4f} ->"
        f" {facts['f1_last']:.4f} (best {facts['f1_best']:.4f}) | |",
        "| other trends per 1,000 corrections | "
        + ", ".join(f"{name} {value:+.4f}" for name, value in trends.items() if name != "f1_macro")
        + " | |",
        f"| candidates / promoted | {facts['candidates']} / {facts['promoted']} | |",
        f"| freshness p50 | {p50:.2f} s | <= {FRESHNESS_TARGET:.0f} s |",
        f"| freshness max | {worst:.2f} s | |",
        "",
        "| corrections | corpus rows | version | promoted | F1 macro | F1 micro | F1 weighted"
        " | AP macro | freshness (s) |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for item in rows:
        fresh = "" if item.freshness_seconds is None else f"{item.freshness_seconds:.2f}"
        promoted = "yes" if item.promoted else f"no: {item.reason}"
        lines.append(
            f"| {item.feedback_sent} | {item.training_rows} | `{item.version}` | {promoted}"
            f" | {item.f1_macro:.4f} | {item.f1_micro:.4f} | {item.f1_weighted:.4f}"
            f" | {item.average_precision_macro:.4f} | {fresh} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(rows: list[Row], batch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (macro, others, freshness) = plt.subplots(
        3, 1, figsize=(9, 10), sharex=True, height_ratios=(3, 2, 2)
    )
    corpus = [item.feedback_sent for item in rows]
    macro.plot(corpus, [item.f1_macro for item in rows], marker=".", label="F1 macro")
    first, last = corpus[0], corpus[-1]
    fit = statistics.linear_regression(corpus, [item.f1_macro for item in rows])
    macro.plot(
        [first, last],
        [fit.intercept + fit.slope * first, fit.intercept + fit.slope * last],
        linestyle="--",
        color="tab:blue",
        label=f"least-squares trend ({fit.slope * 1000:+.4f} per 1,000 corrections)",
    )
    refused = [item for item in rows if not item.promoted]
    if refused:
        macro.scatter(
            [item.feedback_sent for item in refused],
            [item.f1_macro for item in refused],
            marker="x",
            color="black",
            zorder=3,
            label="candidate not promoted",
        )
    macro.set_ylabel("F1 macro (test set)")
    macro.set_title("Model quality as user corrections arrive (one point per candidate)")
    for name, label in [
        ("f1_micro", "F1 micro"),
        ("f1_weighted", "F1 weighted"),
        ("average_precision_macro", "average precision (macro)"),
    ]:
        others.plot(corpus, [getattr(item, name) for item in rows], marker=".", label=label)
    others.set_ylabel("test-set score")
    for axes in (macro, others):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    fresh = [item for item in rows if item.freshness_seconds is not None]
    freshness.bar(
        [item.feedback_sent for item in fresh],
        [item.freshness_seconds for item in fresh],
        width=batch * 0.6,
        color="tab:green",
    )
    freshness.axhline(FRESHNESS_TARGET, color="tab:red", linestyle="--", label="target p50")
    freshness.set_ylabel("freshness (s)")
    freshness.set_xlabel("corrections sent")
    freshness.set_title(f"From the {batch}-th correction's 202 to both replicas serving")
    freshness.grid(alpha=0.3)
    freshness.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, help="as tagloop up")
    parser.add_argument("--limit", type=int, default=5000, help="corrections to replay")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--stack-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="settings the stack was started with, recorded in loop.md",
    )
    args = parser.parse_args()
    stack = Stack(args.base_port)
    rows, batch = replay(stack, args.limit, args.timeout)
    if len(rows) < 2:
        raise SystemExit("bench_loop: no candidate was trained; nothing to report")
    facts = summary(rows)
    if facts["freshness_p50"] is None:
        raise SystemExit("bench_loop: no candidate was promoted; nothing to report")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "loop.csv")
    stack_env = "".join(f"{setting} " for setting in args.stack_env)
    write_markdown(rows, batch, facts, args.base_port, stack_env, args.out / "loop.md")
    plot(rows, batch, args.out / "loop.png")
    print(
        f"F1 macro {facts['f1_first']:.4f} -> {facts['f1_last']:.4f}"
        f" (trend {facts['trends']['f1_macro']:+.4f} per 1,000); freshness p50"
        f" {facts['freshness_p50']:.2f} s, max {facts['freshness_max']:.2f} s;"
        f" wrote {args.out}/loop.csv, loop.md, loop.png"
    )


if __name__ == "__main__":
    main()
