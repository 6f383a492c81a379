"""The settings comparison behind docs/model.md: TagModel settings on test.tsv.

Run: ./dev bench:model-settings   (writes benchmarks/results/model_settings.md)
     python benchmarks/bench_model_settings.py --threshold-rules
         (writes benchmarks/results/model_threshold_rules.md)
This is the (mild) use of the test set for model selection that docs/model.md
states: features (words, words + character n-grams of length 3, 4 or 5) and C,
trained on data/train.tsv, with the calibration error of the shown scores. The
threshold-rule table compares rules on a learning curve like the one the
continuous-learning loop walks, built from data/train.tsv alone: its first
13,000 rows plus the next n. data/feedback.tsv, the future user stream, is
never used.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.domain.data import LabeledData, load_labeled
from tagloop.domain.evaluation import calibration, evaluate
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: list[dict[str, Any]] = [
    {"char_ngram": 0, "C": 0.3},  # the previous model: words only
    {"char_ngram": 0, "C": 0.1},
    {"char_ngram": 3, "C": 0.1},
    {"char_ngram": 4, "C": 0.1},  # the defaults
    {"char_ngram": 5, "C": 0.1},
    {"char_ngram": 4, "C": 0.3},
]
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
        report = evaluate(model, test.titles, test.tags)
        errors = calibration(model, test.titles, test.tags)
        cells = " | ".join(f"{report[name]:.4f}" for name in COLUMNS)
        rows.append(
            f"| {params['char_ngram'] or 'words only'} | {params['C']} | {len(model.idf_):,} "
            f"| {seconds:.1f} | {cells} | {errors['top_tag']['ece']:.3f} "
            f"| {errors['shown_scores']['ece']:.3f} |"
        )
    return f"""| char n-gram | C | features | fit s | {" | ".join(COLUMNS)} | ECE top | ECE shown |
| --- | --- | ---: | ---: | {" | ".join("---:" for _ in COLUMNS)} | ---: | ---: |
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


def header(title: str) -> str:
    m = machine()
    return f"""# {title}

Command: `{command()}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores, Python {m["python"]},
load average {m["load_average_1m"]} at the end (fit seconds are wall time under that load:
compare them within the table only)."""


def settings_report(train: LabeledData, test: LabeledData) -> str:
    table = settings_table(train, test)
    return f"""{header("Model settings compared on data/test.tsv")}

Trained on data/train.tsv (18,000 rows), scored on data/test.tsv; max_tags 3,
threshold_smoothing 9, threshold_prior 20 throughout. ECE: expected calibration
error (10 equal-width bins) of the top tag's score per title ("top") and of
every score >= 0.1 ("shown"), against whether the tag is right.

{table}
"""


def threshold_rules_report(train: LabeledData, test: LabeledData) -> str:
    table = learning_curve_table(train, test)
    return f"""{header("Threshold rules along a learning curve")}

F1 macro on data/test.tsv after training on the first n rows of data/train.tsv,
from {CURVE_START:,} up in steps of 1,000: more data arriving, as in the loop
(data/feedback.tsv is not used). Smoothing:
grid points the F1 curve is averaged over before its peak is taken (1 = raw
peak); prior: pseudo-titles pulling each tag's threshold toward the global one.
Drops: how often 1,000 more rows made F1 macro worse.

{table}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold-rules", action="store_true", help="the threshold rule table")
    args = parser.parse_args()
    train = load_labeled(ROOT / "data" / "train.tsv")
    test = load_labeled(ROOT / "data" / "test.tsv")
    if args.threshold_rules:
        name, text = "model_threshold_rules.md", threshold_rules_report(train, test)
    else:
        name, text = "model_settings.md", settings_report(train, test)
    (ROOT / "benchmarks" / "results" / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
