"""The settings comparison behind docs/model.md: a few TagModel settings on test.tsv.

Run: ./dev bench:model-settings   (writes benchmarks/results/model_settings.md)
This is the (mild) use of the test set for model selection that docs/model.md
states. The second table compares threshold rules on a learning curve like the
one the continuous-learning loop walks, built from data/train.tsv alone: its
first 13,000 rows plus the next n. data/feedback.tsv, the future user stream,
is never used.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.domain.data import LabeledData, load_labeled
from tagloop.domain.evaluation import evaluate
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: list[dict[str, Any]] = [
    {"C": 0.3, "min_df": 2},  # the defaults
    {"C": 0.1, "min_df": 2},
    {"C": 1.0, "min_df": 2},
    {"C": 0.3, "min_df": 1},
]
MAX_TAGS = (2, 3, 5)
THRESHOLD_RULES: list[dict[str, Any]] = [
    {"threshold_smoothing": 1, "threshold_prior": 0.0},  # raw per-tag F1 peak
    {"threshold_smoothing": 9, "threshold_prior": 0.0},
    {"threshold_smoothing": 1, "threshold_prior": 20.0},
    {"threshold_smoothing": 9, "threshold_prior": 20.0},  # the defaults
]
CURVE_START = 13_000
CURVE_ROWS = (0, 1000, 2000, 3000, 4000, 5000)
COLUMNS = (
    "f1_macro",
    "f1_weighted",
    "f1_micro",
    "average_precision_macro",
    "roc_auc_macro",
    "accuracy",
)


def settings_table(train: LabeledData, test: LabeledData) -> str:
    rows = []
    for params in SETTINGS:
        started = time.perf_counter()
        model = TagModel(**params).fit(train.titles, train.tags)
        seconds = time.perf_counter() - started
        for max_tags in MAX_TAGS:
            model.max_tags = max_tags  # only the choice of tags changes, not the fit
            report = evaluate(model, test.titles, test.tags)
            cells = " | ".join(f"{report[name]:.4f}" for name in COLUMNS)
            rows.append(
                f"| {params['C']} | {params['min_df']} | {max_tags} | {seconds:.1f} | {cells} |"
            )
    return f"""| C | min_df | max_tags | fit s | {" | ".join(COLUMNS)} |
| --- | --- | --- | --- | {" | ".join("---" for _ in COLUMNS)} |
{chr(10).join(rows)}"""


def learning_curve_table(train: LabeledData, test: LabeledData) -> str:
    rows = []
    for rule in THRESHOLD_RULES:
        f1 = [
            evaluate(
                TagModel(**rule).fit(
                    train.titles[: CURVE_START + n], train.tags[: CURVE_START + n]
                ),
                test.titles,
                test.tags,
            )["f1_macro"]
            for n in CURVE_ROWS
        ]
        drops = sum(later < earlier for earlier, later in itertools.pairwise(f1))
        cells = " | ".join(f"{value:.4f}" for value in f1)
        rows.append(
            f"| {rule['threshold_smoothing']} | {rule['threshold_prior']:g} | {cells} "
            f"| {statistics.fmean(f1):.4f} | {f1[-1] - f1[0]:+.4f} | {drops} |"
        )
    header = " | ".join(f"{CURVE_START + n:,}" for n in CURVE_ROWS)
    return f"""| smoothing | prior | {header} | mean | gain | drops |
| --- | --- | {" | ".join("---:" for _ in CURVE_ROWS)} | ---: | ---: | ---: |
{chr(10).join(rows)}"""


def main() -> None:
    train = load_labeled(ROOT / "data" / "train.tsv")
    test = load_labeled(ROOT / "data" / "test.tsv")
    m = machine()
    text = f"""# Model settings compared on data/test.tsv

Command: `{command()}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores, Python {m["python"]}.
Defaults: C 0.3, min_df 2, max_tags 3, threshold_smoothing 9, threshold_prior 20.

## Features, regularisation and tag count (trained on data/train.tsv)

{settings_table(train, test)}

## Threshold rules along the learning curve

F1 macro on data/test.tsv after training on the first n rows of data/train.tsv,
from {CURVE_START:,} up in steps of 1,000: more data arriving, as in the loop
(data/feedback.tsv is not used). Smoothing:
grid points the F1 curve is averaged over before its peak is taken (1 = raw
peak); prior: pseudo-titles pulling each tag's threshold toward the global one.
Drops: how often 1,000 more rows made F1 macro worse.

{learning_curve_table(train, test)}
"""
    out = ROOT / "benchmarks" / "results" / "model_settings.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
