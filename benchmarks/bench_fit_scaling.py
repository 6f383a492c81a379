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

"window": the default model on at most `--window` rows of the corpus, as a
refit trains with TAGLOOP_TRAINING_WINDOW (`learning_service.training.within_window`:
the corpus here is all bootstrap, so the fit is its fixed sample). `--quality`
adds what the window costs on data/test.tsv: train.tsv as the bootstrap corpus
and data/feedback.tsv as 5,000 corrections, fitted with and without the window.
`--settings window` runs only those fits, keeping the others' earlier figures.

`--write-corpus PATH` writes the 92,000-row corpus as a TSV for a learner's
TAGLOOP_TRAIN_DATA (the freshness run in docs/model.md "Training window").

Run only the new parts: flock /work/wt/bench.lock python benchmarks/bench_fit_scaling.py
--settings window --quality 20000 15000
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from learning_service.config import DEFAULT_TRAINING_WINDOW
from learning_service.store import StoredFeedback
from learning_service.training import Corpus, training_corpus, within_window
from tagloop.domain.data import load_labeled
from tagloop.domain.evaluation import evaluate
from tagloop.domain.messages import Feedback
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
    (1, "window"),
    (2, "window"),
    (4, "window"),
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


def timed_fit(
    titles: list[str], tags: list[list[str]], settings: dict[str, Any]
) -> tuple[TagModel, dict[str, Any]]:
    wall, cpu = time.perf_counter(), time.process_time()
    model = TagModel(**settings).fit(titles, tags)
    return model, {
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "load_average_1m": machine()["load_average_1m"],
    }


def fit_run(copies: int, settings: str, window: int) -> dict[str, Any]:
    titles, tags = corpus(copies)
    rows = len(titles)
    if settings == "window":
        sample = within_window(Corpus(titles, tags), Corpus([], []), window)
        titles, tags = sample.titles, sample.tags
    _, timing = timed_fit(titles, tags, PREVIOUS if settings == "previous" else {})
    return {"rows": rows, "settings": settings, "trained": len(titles), **timing}


def quality(window: int | None) -> dict[str, Any]:
    """F1 macro on test.tsv of a refit after all of feedback.tsv, with or without a window."""
    train = load_labeled(ROOT / "data" / "train.tsv")
    feedback = load_labeled(ROOT / "data" / "feedback.tsv")
    rows = [
        StoredFeedback.from_feedback(Feedback(title=title, tags=tags), "2026-01-01T00:00:00Z")
        for title, tags in zip(feedback.titles, feedback.tags, strict=True)
    ]
    data = training_corpus(Corpus(train.titles, train.tags), rows, 3, 1, window)
    model, timing = timed_fit(data.train.titles, data.train.tags, {})
    test = load_labeled(ROOT / "data" / "test.tsv")
    f1_macro = evaluate(model, test.titles, test.tags)["f1_macro"]
    return {"window": window, "trained": len(data.train), "f1_macro": round(f1_macro, 4), **timing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=DEFAULT_TRAINING_WINDOW)
    parser.add_argument("--settings", choices=sorted({s for _, s in RUNS}), action="append")
    parser.add_argument(
        "--quality", type=int, nargs="*", metavar="WINDOW", help="quality cost of these windows"
    )
    parser.add_argument("--write-corpus", type=Path, help="write the 92k corpus here and stop")
    args = parser.parse_args()
    if args.write_corpus:
        write_corpus(args.write_corpus, max(copies for copies, _ in RUNS))
        return
    chosen = set(args.settings or {s for _, s in RUNS})
    results: dict[str, Any] = {"command": command(), "machine": machine(), "fits": []}
    if args.settings and (RESULTS / "fit_scaling.json").exists():  # keep the others' figures
        earlier = json.loads((RESULTS / "fit_scaling.json").read_text())
        results["fits"] = [f for f in earlier["fits"] if f["settings"] not in chosen]
        results["earlier"] = {"command": earlier["command"], "machine": earlier["machine"]}
    for copies, settings in RUNS:
        if settings in chosen:
            results["fits"].append(fit_run(copies, settings, args.window))
            print(results["fits"][-1], flush=True)
            write(results)  # after every fit: a long run still leaves what it measured
    if args.quality is not None:
        results["quality"] = [quality(window) for window in [None, *args.quality]]
        write(results)
    print(render(results))


def write_corpus(path: Path, copies: int) -> None:
    """The corpus as a `title<TAB>tags` file that `load_labeled` reads back."""
    titles, tags = corpus(copies)
    frame = pd.DataFrame({"title": titles, "tags": [str(row) for row in tags]})
    frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_MINIMAL)


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fit_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "fit_scaling.md").write_text(render(results))


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    base = {r["settings"]: r["cpu_seconds"] for r in reversed(results["fits"])}
    lines = "\n".join(
        f"| {r['rows']:,} | {r['settings']} | {r.get('trained', r['rows']):,} | {r['cpu_seconds']} "
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
first fit with the same settings; "window": the default settings on a fixed
sample of at most the window's rows ("trained").
{earlier(results)}
| rows | settings | trained | CPU s | vs first | wall s | load (1 min) |
| ---: | --- | ---: | ---: | ---: | ---: | ---: |
{lines}
{render_quality(results.get("quality"))}"""


def earlier(results: dict[str, Any]) -> str:
    if "earlier" not in results:
        return ""
    m = results["earlier"]["machine"]
    return f"Rows not run by this command: `{results['earlier']['command']}`, {m['date']}.\n"


def render_quality(runs: list[dict[str, Any]] | None) -> str:
    if not runs:
        return ""
    lines = "\n".join(
        f"| {r['window'] or 'none'} | {r['trained']:,} | {r['f1_macro']} | {r['cpu_seconds']} "
        f"| {r['load_average_1m']} |"
        for r in runs
    )
    return f"""
What the window costs: train.tsv as the bootstrap corpus and feedback.tsv as 5,000
corrections (a refit after the whole replay), F1 macro on data/test.tsv:

| window | trained rows | F1 macro | fit CPU s | load (1 min) |
| --- | ---: | ---: | ---: | ---: |
{lines}
"""


if __name__ == "__main__":
    main()
