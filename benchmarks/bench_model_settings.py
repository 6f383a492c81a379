"""The settings comparison behind docs/model.md: a few TagModel settings on test.tsv.

Run: ./dev bench:model-settings   (writes benchmarks/results/model_settings.md)
This is the (mild) use of the test set for model selection that docs/model.md
states; data/feedback.tsv is never used.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from tagloop.data import load_labeled
from tagloop.metrics import evaluate
from tagloop.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    {"C": 0.3, "min_df": 2},  # the defaults
    {"C": 0.1, "min_df": 2},
    {"C": 1.0, "min_df": 2},
    {"C": 0.3, "min_df": 1},
]
MAX_TAGS = (2, 3, 5)
COLUMNS = (
    "f1_macro",
    "f1_weighted",
    "f1_micro",
    "average_precision_macro",
    "roc_auc_macro",
    "accuracy",
)


def main() -> None:
    train = load_labeled(ROOT / "data" / "train.tsv")
    test = load_labeled(ROOT / "data" / "test.tsv")
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
    m = machine()
    text = f"""# Model settings compared on data/test.tsv

Command: `{command()}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores, Python {m["python"]}.
Defaults: C 0.3, min_df 2, max_tags 3.

| C | min_df | max_tags | fit s | {" | ".join(COLUMNS)} |
| --- | --- | --- | --- | {" | ".join("---" for _ in COLUMNS)} |
{chr(10).join(rows)}
"""
    out = ROOT / "benchmarks" / "results" / "model_settings.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
