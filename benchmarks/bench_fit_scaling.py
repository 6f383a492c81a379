"""Fit time against corpus size: does a refit stay near-linear as the corpus grows?

Run: flock /work/wt/bench.lock python benchmarks/bench_fit_scaling.py [--every-row]
Writes benchmarks/results/fit_scaling.json and fit_scaling.md.

The corpus is data/train.tsv + data/feedback.tsv (23,000 rows) and perturbed
copies of it (46,000 and 92,000 rows: each copy drops one word of every title
and swaps two neighbouring words), for timing only: the copies are not real
titles and no quality figure is read from them. Each size is fitted with the
default TagModel (thresholds and calibration from out-of-fold fits on at most
`calibration_rows` rows) and, with --every-row, at 46,000 rows with out-of-fold
fits on every row (the previous rule) for comparison. CPU seconds (all threads) are the figure to compare
on a shared machine; wall seconds are recorded beside them with the load.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.domain.data import load_labeled
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = (1, 2, 4)  # copies of train + feedback
UNBOUNDED = 10**9


def perturbed(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 2:
        del words[rng.randrange(len(words))]
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def corpus(copies: int) -> tuple[list[str], list[list[str]]]:
    train = load_labeled(ROOT / "data" / "train.tsv")
    feedback = load_labeled(ROOT / "data" / "feedback.tsv")
    titles, tags = train.titles + feedback.titles, train.tags + feedback.tags
    rng = random.Random(0)
    out_titles, out_tags = list(titles), list(tags)
    for _ in range(copies - 1):
        out_titles += [perturbed(title, rng) for title in titles]
        out_tags += tags
    return out_titles, out_tags


def timed_fit(titles: list[str], tags: list[list[str]], calibration_rows: int) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    TagModel(calibration_rows=calibration_rows).fit(titles, tags)
    return {
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def main() -> None:
    runs = [(copies, "bounded", TagModel().calibration_rows) for copies in SIZES]
    if "--every-row" in sys.argv:  # at 23k both rules are the same fit
        runs.append((2, "every row", UNBOUNDED))
    results: dict[str, Any] = {"command": command(), "machine": machine(), "fits": []}
    for copies, rule, calibration_rows in runs:
        titles, tags = corpus(copies)
        result = {
            "rows": len(titles),
            "out_of_fold": rule,
            **timed_fit(titles, tags, calibration_rows),
        }
        result["load_average_1m"] = machine()["load_average_1m"]
        print(result, flush=True)
        results["fits"].append(result)
        write(results)  # after every fit: a long run still leaves what it measured
    print(render(results))


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fit_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "fit_scaling.md").write_text(render(results))


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    base = results["fits"][0]["cpu_seconds"]
    lines = "\n".join(
        f"| {r['rows']:,} | {r['out_of_fold']} | {r['cpu_seconds']} "
        f"| {r['cpu_seconds'] / base:.1f}x | {r['wall_seconds']} "
        f"| {r['load_average_1m']} |"
        for r in results["fits"]
    )
    return f"""# Fit time against corpus size

Command: `{results["command"]}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores,
Python {m["python"]}. data/train.tsv + data/feedback.tsv and perturbed copies of it
(timing only). "bounded": the default, thresholds and calibration from
out-of-fold fits on at most {TagModel().calibration_rows:,} rows; "every row": out-of-fold
fits on the whole corpus (the previous rule; at 23,000 rows both are the same fit).
CPU seconds count all threads.

| rows | out-of-fold fits | CPU s | vs 23k | wall s | load (1 min) |
| ---: | --- | ---: | ---: | ---: | ---: |
{lines}
"""


if __name__ == "__main__":
    main()
