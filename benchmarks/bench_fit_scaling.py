"""Fit time against corpus size: does a refit stay near-linear as the corpus grows?

Run: flock /work/wt/bench.lock python benchmarks/bench_fit_scaling.py
Writes benchmarks/results/fit_scaling.json and fit_scaling.md.

The corpora: data/train.tsv alone (18,000 rows: the bootstrap fit of a fresh
stack), train + data/feedback.tsv (23,000 rows) and perturbed copies of it
(46,000 and 92,000 rows: each copy drops one word of every title and swaps two
neighbouring words), for timing only: the copies are not real titles and no
quality figure is read from them. Each is fitted with the default TagModel
(thresholds and calibration from `cv_folds` out-of-fold fits on at most
`calibration_rows` rows) and, side by side at 18,000 and 92,000 rows, with the
previous model's settings (words only, C=0.3, three out-of-fold fits on every
row). CPU seconds (all threads) are the figure to compare on a shared
machine; wall seconds are recorded beside them with the load.
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
UNBOUNDED = 10**9
PREVIOUS: dict[str, Any] = {"char_ngram": 0, "C": 0.3, "cv_folds": 3, "calibration_rows": UNBOUNDED}
"""The settings of the model before issue 16 (its cost; its scores were Platt-scaled)."""
RUNS: list[tuple[int, str]] = [
    (0, "previous"),
    (0, "default"),
    (1, "default"),
    (2, "default"),
    (4, "default"),
    (4, "previous"),
]
"""(copies of train + feedback, 0 = train.tsv alone; settings)."""


def perturbed(title: str, rng: random.Random) -> str:
    words = title.split()
    if len(words) > 2:
        del words[rng.randrange(len(words))]
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def corpus(copies: int) -> tuple[list[str], list[list[str]]]:
    train = load_labeled(ROOT / "data" / "train.tsv")
    if copies == 0:
        return train.titles, train.tags
    feedback = load_labeled(ROOT / "data" / "feedback.tsv")
    titles, tags = train.titles + feedback.titles, train.tags + feedback.tags
    rng = random.Random(0)
    out_titles, out_tags = list(titles), list(tags)
    for _ in range(copies - 1):
        out_titles += [perturbed(title, rng) for title in titles]
        out_tags += tags
    return out_titles, out_tags


def timed_fit(titles: list[str], tags: list[list[str]], settings: dict[str, Any]) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    TagModel(**settings).fit(titles, tags)
    return {
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def main() -> None:
    results: dict[str, Any] = {"command": command(), "machine": machine(), "fits": []}
    for copies, settings in RUNS:
        titles, tags = corpus(copies)
        result = {
            "rows": len(titles),
            "settings": settings,
            **timed_fit(titles, tags, PREVIOUS if settings == "previous" else {}),
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
    base = {r["settings"]: r["cpu_seconds"] for r in reversed(results["fits"])}
    lines = "\n".join(
        f"| {r['rows']:,} | {r['settings']} | {r['cpu_seconds']} "
        f"| {r['cpu_seconds'] / base[r['settings']]:.1f}x | {r['wall_seconds']} "
        f"| {r['load_average_1m']} |"
        for r in results["fits"]
    )
    model = TagModel()
    return f"""# Fit time against corpus size

Command: `{results["command"]}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores,
Python {m["python"]}. 18,000 rows: data/train.tsv (the bootstrap fit); 23,000:
train + data/feedback.tsv; 46,000 and 92,000: perturbed copies of it (timing only).
"default": words + character 4-grams, thresholds and calibration from
{model.cv_folds} out-of-fold fits on a sample of at most {model.calibration_rows:,} rows;
"previous": the settings before issue 16 (words only, C=0.3, three out-of-fold
fits on every row). CPU seconds count all threads; "vs first" divides by the
first fit with the same settings.

| rows | settings | CPU s | vs first | wall s | load (1 min) |
| ---: | --- | ---: | ---: | ---: | ---: |
{lines}
"""


if __name__ == "__main__":
    main()
