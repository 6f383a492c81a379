"""Rollout benchmark: what a shadow or canary candidate adds to a replica's model time.

Run: ./dev bench:rollout   (or python benchmarks/bench_rollout.py)
Writes benchmarks/results/rollout.json and rollout.md.
In-process `inference_service.rollout.predict` for one title (the UI's request), with
Prometheus in multiprocess mode as under gunicorn: the served model alone, with a shadow
beside it, and with a canary at 50 %. The three are interleaved round by round, so load
from other processes affects them alike; the ratio is the figure to compare.
Target (issue 17): a shadow costs about one more model call (~0.04 ms), nothing without one.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# As in a replica: the metrics live in mmapped files (set before prometheus_client loads).
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-rollout-")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from inference_service.model_holder import LoadedModel
from inference_service.rollout import Candidate, predict
from tagloop.domain.data import load_labeled, load_titles
from tagloop.domain.model import TagModel
from tagloop.domain.rollout import Stage, canary_threshold

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 20
TITLES_PER_ROUND = 500


def loaded(model: TagModel, version: str) -> LoadedModel:
    return LoadedModel(model, version, {}, "2026-01-01T00:00:00.000+00:00", time.time())


def per_call_ms(served: LoadedModel, candidate: Candidate | None, titles: list[str]) -> float:
    started = time.perf_counter()
    for title in titles:
        predict(served, candidate, [title])
    return (time.perf_counter() - started) * 1000 / len(titles)


def main() -> None:
    train = load_labeled(ROOT / "data" / "train.tsv")
    titles = load_titles(ROOT / "data" / "unlabeled.tsv")[: ROUNDS * TITLES_PER_ROUND]
    half = len(train) // 2
    served = loaded(TagModel().fit(train.titles, train.tags), "20260101T000000000Z-000000")
    other = TagModel().fit(train.titles[:half], train.tags[:half])
    version = "20260101T000000000Z-111111"
    setups = {
        "served only": None,
        "shadow": Candidate(loaded(other, version), Stage.SHADOW, 0, ""),
        "canary 50 %": Candidate(loaded(other, version), Stage.CANARY, canary_threshold(0.5), ""),
    }
    for candidate in setups.values():  # warm-up
        per_call_ms(served, candidate, titles[:200])
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for index in range(ROUNDS):
        chunk = titles[index * TITLES_PER_ROUND : (index + 1) * TITLES_PER_ROUND]
        for name, candidate in setups.items():
            samples[name].append(per_call_ms(served, candidate, chunk))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["served only"]
    results = {
        "command": command(),
        "machine": machine(),
        "titles_per_setup": ROUNDS * TITLES_PER_ROUND,
        "per_request_ms_median_of_rounds": {k: round(v, 4) for k, v in medians.items()},
        "added_ms": {k: round(v - base, 4) for k, v in medians.items()},
        "ratio_to_served_only": {k: round(v / base, 2) for k, v in medians.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "rollout.md").write_text(render(results))
    print(render(results))


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    rows = "\n".join(
        f"| {name} | {ms} | {r['added_ms'][name]:+} | {r['ratio_to_served_only'][name]} |"
        for name, ms in r["per_request_ms_median_of_rounds"].items()
    )
    return f"""# Rollout benchmark: model time per request with a candidate beside the served model

Command: `{r["command"]}` on {m["cpu"]} ({m["cores"]} cores), load average {m["load_average_1m"]}
(1 min) at {m["date"]}, Python {m["python"]}. One title per call, {r["titles_per_setup"]} calls per
setup, interleaved in rounds; Prometheus in multiprocess mode as under gunicorn.

| setup | ms per request (median of rounds) | added ms | ratio |
|---|---|---|---|
{rows}

A shadow predicts every title a second time (about one model call more), a canary splits
titles by a sha256 of the normalised title (each title still meets one model).
"""


if __name__ == "__main__":
    main()
