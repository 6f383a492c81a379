"""Model benchmark: training time, test-set quality, calibration, in-process latency.

Run: ./dev bench:model   (or python benchmarks/bench_model.py [--fits N])
Writes benchmarks/results/model.json and model.md (with the reliability tables).
Targets (issue 2): fit on train.tsv <= 15 s; one title p50 <= 0.5 ms, p99 <= 2 ms;
F1 macro >= 0.50, F1 weighted >= 0.63 on test.tsv. Issue 16: calibration error
(top tag, and scores >= 0.1) <= 0.05 on test.tsv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.domain.bundle import load_bundle
from tagloop.domain.data import load_labeled, load_titles
from tagloop.domain.evaluation import calibration, evaluate
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=3, help="fits timed (median reported)")
    parser.add_argument(
        "--bundle", type=Path, help="measure a saved bundle of the default model instead of fitting"
    )
    args = parser.parse_args()
    train = load_labeled(ROOT / "data" / "train.tsv")
    test = load_labeled(ROOT / "data" / "test.tsv")
    titles = load_titles(ROOT / "data" / "unlabeled.tsv")

    fit_seconds = []
    if args.bundle:
        model, _ = load_bundle(args.bundle)
    for _ in range(0 if args.bundle else args.fits):
        started = time.perf_counter()
        model = TagModel().fit(train.titles, train.tags)
        fit_seconds.append(time.perf_counter() - started)
    quality = evaluate(model, test.titles, test.tags)
    honesty = calibration(model, test.titles, test.tags)

    for title in titles[:500]:  # warm-up
        model.predict([title])
    latencies, cpu = [], []
    for title in titles[:10_000]:
        started, started_cpu = time.perf_counter(), time.thread_time()
        model.predict([title])
        latencies.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    ms, cpu_ms = np.array(latencies) * 1000, np.array(cpu) * 1000

    batch = titles[:1000]
    started = time.perf_counter()
    rounds = 10
    for _ in range(rounds):
        model.predict(batch)
    batch_rate = rounds * len(batch) / (time.perf_counter() - started)

    results = {
        "command": command(),
        "machine": machine(),
        "fit_seconds_median": round(statistics.median(fit_seconds), 2) if fit_seconds else None,
        "fit_seconds": [round(s, 2) for s in fit_seconds],
        "training_rows": len(train),
        "single_title_ms": {
            "p50": round(float(np.percentile(ms, 50)), 4),
            "p90": round(float(np.percentile(ms, 90)), 4),
            "p99": round(float(np.percentile(ms, 99)), 4),
            "max": round(float(ms.max()), 4),
            "n": len(ms),
        },
        # CPU time of the serving thread per title: what the model costs, without the waits
        # for a core that a loaded machine adds to the wall-clock figures.
        "single_title_cpu_ms": {
            name: round(float(np.percentile(cpu_ms, q)), 4)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99))
        },
        "batch_1000_titles_per_second": round(batch_rate),
        "test_metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in quality.items()},
        "calibration": honesty,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "model.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "model.md").write_text(render(results))
    print(render(results))


def render(r: dict) -> str:
    m, lat, q = r["machine"], r["single_title_ms"], r["test_metrics"]
    cpu = r["single_title_cpu_ms"]
    fit = f"{r['fit_seconds_median']} s" if r["fit_seconds"] else "not fitted: a saved bundle"
    baseline = {"accuracy": 0.300, "f1_micro": 0.614, "f1_macro": 0.405, "f1_weighted": 0.589,
                "average_precision_macro": 0.488, "roc_auc_macro": 0.912}  # fmt: skip
    rows = "\n".join(
        f"| {name} | {q[name]} | {baseline.get(name, '')} |" for name in q if name != "rows"
    )
    return f"""# Model benchmark

Command: `{r["command"]}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores, Python {m["python"]},
load average {m["load_average_1m"]} at the end.

| what | result | target |
| --- | --- | --- |
| fit on {r["training_rows"]} rows (median of {len(r["fit_seconds"])}) | {fit} | <= 15 s |
| one title, p50 | {lat["p50"]} ms | <= 0.5 ms |
| one title, p90 | {lat["p90"]} ms | |
| one title, p99 | {lat["p99"]} ms | <= 2 ms |
| one title, CPU time p50 / p90 / p99 | {cpu["p50"]} / {cpu["p90"]} / {cpu["p99"]} ms | |
| batch of 1,000 titles | {r["batch_1000_titles_per_second"]:,} titles/s | |

Test-set quality ({q["rows"]} rows of data/test.tsv), against the baseline of
data/README.md (TF-IDF + one-vs-rest logistic regression, 0.5 threshold):

| metric | tagloop | baseline |
| --- | --- | --- |
{rows}

## Calibration

A shown score is the estimated probability that the tag is right. Expected
calibration error (ECE, 10 equal-width bins, target <= 0.05): top tag of each
title {r["calibration"]["top_tag"]["ece"]}; every score >= 0.1
{r["calibration"]["shown_scores"]["ece"]}.

{reliability_table("Top tag of each title", r["calibration"]["top_tag"])}

{reliability_table("Every score >= 0.1 (what the UI lists)", r["calibration"]["shown_scores"])}
"""


def reliability_table(title: str, report: dict) -> str:
    rows = "\n".join(
        f"| {b['bin']} | {b['count']:,} | {b['mean_score']:.3f} | {b['share_right']:.3f} |"
        for b in report["table"]
    )
    return f"""{title} ({report["n"]:,} scores, ECE {report["ece"]}):

| score | count | mean score | share right |
| --- | ---: | ---: | ---: |
{rows}"""


if __name__ == "__main__":
    main()
