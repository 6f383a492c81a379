"""What the drift hook costs per prediction (inference_service/drift.py).

Run: ./dev bench:drift   (writes benchmarks/results/drift.md)

The hook runs in the predict path of every request, so it must stay a small
fraction of it. Measured in-process, side by side in one run (interleaved
rounds, so machine load hits both alike): the hook alone per title, and a
whole POST /api/predict through the Flask app with the hook and with it
replaced by a no-op. Real titles from data/test.tsv, the bootstrap model
trained on data/train.tsv.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from inference_service import drift
from inference_service.app import create_app
from inference_service.config import InferenceSettings
from inference_service.model_holder import LoadedModel
from inference_service.runtime import Runtime
from tagloop.domain.data import load_labeled
from tagloop.domain.drift import TAG_COUNTS_KEY, tag_counts
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
TITLES = 2000
ROUNDS = 7


def per_call_us(call: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - started) / len(items) * 1e6


def main() -> None:
    train = load_labeled(ROOT / "data" / "train.tsv")
    titles = load_labeled(ROOT / "data" / "test.tsv").titles[:TITLES]
    model = TagModel().fit(train.titles, train.tags)
    loaded = LoadedModel(
        model, "bench", {TAG_COUNTS_KEY: tag_counts(train.tags)}, "2026-01-01T00:00:00Z", 0.0
    )
    runtime = Runtime(InferenceSettings.from_env({}))
    runtime.holder.swap(loaded)
    client = create_app(InferenceSettings.from_env({}), runtime).test_client()
    predictions = {title: model.predict([title]) for title in titles}
    monitor = drift.DriftMonitor()
    real_observe = drift.MONITOR.observe

    def request(title: str) -> None:
        assert client.post("/api/predict", json={"title": title}).status_code == 200

    def hook(title: str) -> None:
        monitor.observe(loaded, predictions[title])

    results: dict[str, list[float]] = {"hook": [], "with": [], "without": []}
    for _ in range(ROUNDS):
        results["hook"].append(per_call_us(hook, titles))
        drift.MONITOR.observe = real_observe  # type: ignore[method-assign]
        results["with"].append(per_call_us(request, titles))
        drift.MONITOR.observe = lambda *args: None  # type: ignore[method-assign]
        results["without"].append(per_call_us(request, titles))
    drift.MONITOR.observe = real_observe  # type: ignore[method-assign]
    median = {name: statistics.median(values) for name, values in results.items()}
    info = machine()
    lines = [
        "# Drift hook cost",
        "",
        f"Command: `{command()}` (benchmarks/bench_drift.py). Machine: {info['cpu']}, "
        f"{info['cores']} cores, load average {info['load_average_1m']} (1 min), "
        f"Python {info['python']}, {info['date']}.",
        "",
        f"{TITLES} titles of data/test.tsv, one per request, {ROUNDS} interleaved rounds; "
        "medians of the per-round means, in-process (Flask test client, no network).",
        "",
        "| what | µs per title |",
        "| --- | ---: |",
        f"| drift hook alone (vocabulary lookups of the model's words, counters) | {median['hook']:.1f} |",
        f"| POST /api/predict with the hook | {median['with']:.1f} |",
        f"| POST /api/predict with the hook a no-op | {median['without']:.1f} |",
        "",
        f"The hook is {median['hook'] / median['without']:.1%} of a request without it; "
        f"with/without ratio {median['with'] / median['without']:.3f}.",
    ]
    out = ROOT / "benchmarks" / "results" / "drift.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
