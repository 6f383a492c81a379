"""The promotion gate on two replays: the learning curve over data/feedback.tsv, and a
slow-poisoning campaign.

Run: flock /work/wt/bench.lock python benchmarks/bench_gate.py
Writes benchmarks/results/gate.json and gate.md.

Both replays build each candidate exactly as the learner does
(`learning_service.training.training_corpus`: corrections override bootstrap
labels of the same title, new tags held back or sliced off) and gate it with
`learning_service.gate.gate` against the best model promoted so far.

- Learning curve: data/train.tsv as the bootstrap, then the first n rows of
  data/feedback.tsv as corrections. It shows what the corrections add and
  that the gate never refuses a clean candidate. (A measurement only: no
  setting was chosen on it.)
- Slow poisoning: each step, an attacker "corrects" every bootstrap title
  carrying one more tag, with that tag removed (a title left without tags
  gets "javascript"), rarest tags first. The candidates do not depend on the
  gate, so one sequence of fits shows both the previous gate (within 0.01 of
  the *current* model) and this one (within the budget of the *best*, plus the
  per-tag floor): which model each would serve, and its test F1 macro.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import command, machine

from learning_service.gate import GateRules, best_promoted, gate, gate_f1_macro
from learning_service.store import StoredFeedback
from learning_service.training import Corpus, training_corpus
from tagloop.domain.data import load_labeled
from tagloop.domain.evaluation import calibration, evaluate_with_tags, new_tag_report
from tagloop.domain.messages import Feedback
from tagloop.domain.model import TagModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CURVE = (0, 2500, 5000)
POISON_STEPS = 5
RULES = GateRules()
OLD_TOLERANCE = 0.01
TEST_DIGEST = "data/test.tsv"


def as_feedback(titles: Sequence[str], tags: Sequence[Sequence[str]]) -> list[StoredFeedback]:
    return [
        StoredFeedback.from_feedback(Feedback(title=title, tags=list(row)), "2026-01-01T00:00:00Z")
        for title, row in zip(titles, tags, strict=True)
    ]


def candidate(bootstrap: Corpus, feedback: list[StoredFeedback], test: Corpus) -> dict[str, Any]:
    """Fit as the learner does and return the evaluation the gate reads."""
    data = training_corpus(bootstrap, feedback, min_support=3)
    model = TagModel().fit(data.train.titles, data.train.tags)
    metrics, tags = evaluate_with_tags(model, test.titles, test.tags)
    new = set(model.classes_.tolist()) - bootstrap.vocabulary()
    new_tags = new_tag_report(model, data.new_tag_slice.titles, data.new_tag_slice.tags, new, tags)
    errors = calibration(model, test.titles, test.tags)
    return {
        "metrics": metrics,
        "tags": tags,
        "new_tags": new_tags,
        "training_rows": len(data.train),
        "ece_top": errors["top_tag"]["ece"],
        "ece_shown": errors["shown_scores"]["ece"],
    }


def judged(
    history: list[dict[str, Any]], evaluation: dict[str, Any], version: str
) -> dict[str, Any]:
    """Gate against the best promoted so far, record the decision in `history`."""
    best = best_promoted(history, TEST_DIGEST)
    decision = gate(evaluation, best, RULES)
    entry = {
        **evaluation,
        "version": version,
        "test_data_sha256": TEST_DIGEST,
        "decision": decision.as_metadata(best["version"] if best else None),
    }
    history.append(entry)
    return entry


def learning_curve(bootstrap: Corpus, test: Corpus, first: dict[str, Any]) -> list[dict[str, Any]]:
    """`first`: the bootstrap model's evaluation (the same fit as the poisoning replay's)."""
    feedback = load_labeled(ROOT / "data" / "feedback.tsv")
    stored = as_feedback(feedback.titles, feedback.tags)
    history: list[dict[str, Any]] = []
    for n in CURVE:
        evaluation = candidate(bootstrap, stored[:n], test) if n else first
        entry = judged(history, evaluation, f"feedback-{n}")
        entry["feedback_rows"] = n
        print(n, entry["metrics"]["f1_macro"], entry["decision"]["promoted"], flush=True)
    return history


def campaign(bootstrap: Corpus) -> list[str]:
    """Tags to erase, rarest first (the cheapest for an attacker, the smallest loss each)."""
    counts = Counter(tag for row in bootstrap.tags for tag in row)
    return [tag for tag, _ in sorted(counts.items(), key=lambda item: (item[1], item[0]))][
        :POISON_STEPS
    ]


def poisoning(bootstrap: Corpus, test: Corpus, first: dict[str, Any]) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    judged(history, first, "bootstrap")
    erased: set[str] = set()
    old_served = history[0]
    for step, tag in enumerate(campaign(bootstrap), start=1):
        erased.add(tag)
        titles, tags = [], []
        for title, row in zip(bootstrap.titles, bootstrap.tags, strict=True):
            if erased & set(row):
                titles.append(title)
                tags.append([t for t in row if t not in erased] or ["javascript"])
        entry = judged(
            history, candidate(bootstrap, as_feedback(titles, tags), test), f"poison-{step}"
        )
        entry["erased"] = tag
        entry["corrections"] = len(titles)
        old_ok = entry["metrics"]["f1_macro"] >= old_served["metrics"]["f1_macro"] - OLD_TOLERANCE
        if old_ok:
            old_served = entry
        entry["previous_gate"] = {
            "promoted": old_ok,
            "served_gate_f1_macro": gate_f1_macro(old_served),
        }
        served = [e for e in history if e["decision"]["promoted"]][-1]
        best = best_promoted(history, TEST_DIGEST)
        assert best is not None
        entry["served_gate_f1_macro"] = gate_f1_macro(served)
        entry["best_gate_f1_macro"] = gate_f1_macro(best)
        print(step, tag, entry["decision"]["promoted"], old_ok, flush=True)
    return history


def main() -> None:
    train = load_labeled(ROOT / "data" / "train.tsv")
    test_data = load_labeled(ROOT / "data" / "test.tsv")
    bootstrap, test = Corpus(train.titles, train.tags), Corpus(test_data.titles, test_data.tags)
    started = machine()
    first = candidate(bootstrap, [], test)
    results = {
        "command": command(),
        "machine": started,
        "rules": RULES.__dict__,
        "learning_curve": learning_curve(bootstrap, test, first),
        "poisoning": poisoning(bootstrap, test, first),
    }
    results["machine_at_end"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    slim = {
        key: [{k: v for k, v in e.items() if k != "tags"} for e in value]
        if isinstance(value, list)
        else value
        for key, value in results.items()
    }
    (RESULTS / "gate.json").write_text(json.dumps(slim, indent=2) + "\n")
    (RESULTS / "gate.md").write_text(render(results))
    print(render(results))


def verdicts(entry: dict[str, Any]) -> str:
    rules = entry["decision"]["rules"]
    if not rules:
        return "bootstrap"
    return ", ".join(f"{v['rule']} {'ok' if v['passed'] else 'FAIL'}" for v in rules)


def render(results: dict[str, Any]) -> str:
    m, end = results["machine"], results["machine_at_end"]
    curve = "\n".join(
        f"| {e['feedback_rows']:,} | {e['training_rows']:,} | {e['metrics']['f1_macro']:.4f} "
        f"| {gate_f1_macro(e):.4f} | {e['metrics']['f1_micro']:.4f} | {e['ece_top']:.3f} "
        f"| {e['ece_shown']:.3f} | {'promoted' if e['decision']['promoted'] else 'rejected'} "
        f"| {verdicts(e)} |"
        for e in results["learning_curve"]
    )
    poison = "\n".join(
        f"| {i} | {e['erased']} | {e['corrections']:,} | {gate_f1_macro(e):.4f} "
        f"| {'promoted' if e['previous_gate']['promoted'] else 'rejected'} "
        f"| {e['previous_gate']['served_gate_f1_macro']:.4f} "
        f"| {'promoted' if e['decision']['promoted'] else 'rejected'} "
        f"| {e['served_gate_f1_macro']:.4f} | {e['best_gate_f1_macro']:.4f} | {verdicts(e)} |"
        for i, e in enumerate(results["poisoning"][1:], start=1)
    )
    worst = min(
        e["served_gate_f1_macro"] - e["best_gate_f1_macro"] for e in results["poisoning"][1:]
    )
    r = results["rules"]
    return f"""# The promotion gate: learning curve and slow poisoning

Command: `{results["command"]}` — {m["date"]}, {m["cpu"]}, {m["cores"]} cores,
Python {m["python"]}; load average {m["load_average_1m"]} at the start,
{end["load_average_1m"]} at the end. Rules: budget {r["budget"]} F1 macro below the best
promoted model, per-tag floor {r["tag_floor"]} for test tags with >= {r["tag_min_support"]}
titles. "Gate F1 macro": the mean F1 over the tags data/test.tsv contains (what
the budget compares); "F1 macro" is the headline metric.

## Learning curve over data/feedback.tsv

Bootstrap data/train.tsv, then the first n corrections of data/feedback.tsv.

| corrections | training rows | F1 macro | gate F1 macro | F1 micro | ECE top | ECE shown | decision | rules |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |
{curve}

## Slow poisoning

Step k erases k tags (rarest first) by correcting every bootstrap title that
carries them. "Previous gate": promoted if its F1 macro is within {OLD_TOLERANCE} of
the model it would be serving. "It serves": the gate F1 macro of the model each
gate serves after the step; "best": the best promoted so far under this gate.

| step | tag erased | corrections | candidate gate F1 | previous gate | it serves | this gate | it serves | best | rules |
| ---: | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | --- |
{poison}

Served minus best, worst over the campaign: {worst:+.4f} (the budget is {r["budget"]}).
"""


if __name__ == "__main__":
    main()
