"""The promotion gate: pure functions of a candidate's evaluation and the best promoted one's.

Why not "within a tolerance of the current model": refit noise (about ±0.005
F1 macro) is as large as one poisoning step, so a per-step comparison lets a
sequence of small losses add up (erasing one tag per refit passed it 13 times
in a row). Here every candidate is compared with the *best* model ever
promoted on this test set (or the bootstrap), within one fixed total budget,
so whatever is served stays within the budget of the best; and each test tag
with enough support has its own floor, so one tag cannot be traded away for
noise elsewhere.

A tag the test set does not contain (a tag learned from corrections) is not
counted as a zero in the test F1 macro: the gate's figure averages the tags the
test set has, and each new tag is judged separately on a held-out slice of
the corrections that carry it (`training.split_new_tag_slice`).

An evaluation is a plain mapping (it is stored in the registry metadata):
`metrics` (the test-set metrics of `tagloop.domain.evaluation.evaluate`),
`tags` (per test-set tag: `f1`, `support`, `chosen`), `new_tags` (per new
tag: `f1`, `held_out`) and, optionally, `validated` (an extra scored set:
`{"digest", "metrics"}`, e.g. the validated set of `learning_service.validated`;
`metrics` None while the set is empty). The caller chooses which promoted
model is the best (`best_promoted`) and where its metadata comes from (e.g.
signed metadata).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateRules:
    budget: float = 0.01
    """The most a candidate's test F1 macro may lie below the best promoted model's."""
    tag_floor: float = 0.15
    """The most one test tag's F1 (or a new tag's held-out F1) may fall below the best's."""
    tag_min_support: int = 30
    """Test-set tags with at least this many titles get a floor (fewer: too noisy)."""


@dataclass(frozen=True)
class Decision:
    promoted: bool
    label: str
    """Short label for metrics: bootstrap, gate_passed, or the first rule that failed."""
    reason: str
    rules: list[dict[str, Any]]
    """Each rule's verdict: {"rule", "passed", "detail"}."""

    def as_metadata(self, best_version: str | None) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "rules": self.rules,
            "compared_with": best_version,
        }


def gate_f1_macro(evaluation: Mapping[str, Any]) -> float:
    """F1 macro over the tags the test set contains (new tags are judged elsewhere).

    Evaluations stored before per-tag reports existed fall back to `f1_macro`.
    """
    tags = evaluation.get("tags")
    if isinstance(tags, Mapping) and tags:
        known = [float(t["f1"]) for t in tags.values() if int(t["support"]) > 0]
        if known:
            return sum(known) / len(known)
    return float(evaluation["metrics"]["f1_macro"])


def best_promoted(
    versions: Iterable[Mapping[str, Any]], test_digest: str
) -> Mapping[str, Any] | None:
    """The promoted version (gate, bootstrap or manual) with the best test F1 macro,
    among those scored on this test set; None if there is none."""
    scored = [
        meta
        for meta in versions
        if (meta.get("decision") or {}).get("promoted")
        and meta.get("test_data_sha256") == test_digest
        and isinstance(meta.get("metrics"), Mapping)
    ]
    return max(scored, key=gate_f1_macro, default=None)


def _budget(candidate: Mapping[str, Any], best: Mapping[str, Any], budget: float) -> dict[str, Any]:
    new, old = gate_f1_macro(candidate), gate_f1_macro(best)
    passed = new >= old - budget
    relation = "within" if passed else "below the best by more than"
    return {
        "rule": "f1_macro_budget",
        "passed": passed,
        "detail": f"test F1 macro {new:.4f} vs best promoted {old:.4f}: {relation} {budget}",
    }


def _validated(
    candidate: Mapping[str, Any], best: Mapping[str, Any], budget: float
) -> dict[str, Any]:
    """The extra scored set: the candidate's F1 macro on it within the budget of the best's,
    when both were scored on the same set (same digest); otherwise nothing to compare."""
    rule = "validated_budget"
    mine, theirs = candidate.get("validated") or {}, best.get("validated") or {}
    if not mine.get("metrics"):
        return {"rule": rule, "passed": True, "detail": "no validated set scored"}
    if mine.get("digest") != theirs.get("digest") or not theirs.get("metrics"):
        detail = "the best was not scored on this validated set: nothing to compare"
        return {"rule": rule, "passed": True, "detail": detail}
    new, old = float(mine["metrics"]["f1_macro"]), float(theirs["metrics"]["f1_macro"])
    passed = new >= old - budget
    relation = "within" if passed else "below the best by more than"
    detail = f"validated F1 macro {new:.4f} vs best promoted {old:.4f}: {relation} {budget}"
    return {"rule": rule, "passed": passed, "detail": detail}


def _floor(
    rule: str,
    candidate: Mapping[str, Mapping[str, Any]],
    best: Mapping[str, Mapping[str, Any]],
    floor: float,
    judged: Iterable[str],
) -> dict[str, Any]:
    """Tags in `judged` whose F1 fell below the best's by more than `floor` (a missing
    tag counts as F1 0)."""
    dropped = []
    for tag in sorted(judged):
        old = float(best[tag]["f1"])
        new = float(candidate.get(tag, {}).get("f1", 0.0))
        if new < old - floor:
            dropped.append(f"{tag} {old:.2f}->{new:.2f}")
    detail = (
        f"fell by more than {floor}: {', '.join(dropped)}"
        if dropped
        else f"no tag fell by more than {floor}"
    )
    return {"rule": rule, "passed": not dropped, "detail": detail}


def gate(
    candidate: Mapping[str, Any], best: Mapping[str, Any] | None, rules: GateRules
) -> Decision:
    """Promote the candidate only if every rule passes against the best promoted model."""
    if best is None:
        reason = "bootstrap: no promoted model to compare with"
        return Decision(
            True, "bootstrap", reason, [{"rule": "bootstrap", "passed": True, "detail": reason}]
        )
    best_tags: Mapping[str, Mapping[str, Any]] = best.get("tags") or {}
    best_new: Mapping[str, Mapping[str, Any]] = best.get("new_tags") or {}
    candidate_new: Mapping[str, Mapping[str, Any]] = candidate.get("new_tags") or {}
    verdicts = [
        _budget(candidate, best, rules.budget),
        _floor(
            "tag_floor",
            candidate.get("tags") or {},
            best_tags,
            rules.tag_floor,
            [tag for tag, t in best_tags.items() if int(t["support"]) >= rules.tag_min_support],
        ),
        _floor(
            "new_tag_floor",
            candidate_new,
            best_new,
            rules.tag_floor,
            best_new,
        ),
        _validated(candidate, best, rules.budget),
    ]
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        reason = "; ".join(f"{v['rule']}: {v['detail']}" for v in failed)
        return Decision(False, failed[0]["rule"], reason, verdicts)
    return Decision(True, "gate_passed", verdicts[0]["detail"], verdicts)
