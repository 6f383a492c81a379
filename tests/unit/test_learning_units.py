"""The learner's pure decisions: settings, schedule, gate, held-back tags, online quality."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest

from learning_service.agreement import Agreement
from learning_service.config import LearnerSettings
from learning_service.gate import GateRules, best_promoted, gate, gate_f1_macro
from learning_service.metrics import OnlineQuality
from learning_service.refit import fit_snapshot
from learning_service.store import StoredFeedback
from learning_service.training import Corpus, training_corpus
from tagloop.domain.messages import Feedback
from tagloop.settings import ConfigError


def test_settings_defaults_follow_the_contract(tmp_path):
    settings = LearnerSettings.from_env({})
    assert settings.refit_every == 100
    assert settings.min_fit_interval_seconds == 10
    assert settings.new_tag_min_support == 3
    assert settings.promotion_tolerance == 0.01
    assert settings.admin_token is None
    assert settings.feedback_csv.name == "feedback.csv"
    assert str(settings.train_data) == "data/train.tsv"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TAGLOOP_REFIT_EVERY", "0"),
        ("TAGLOOP_REFIT_EVERY", "lots"),
        ("TAGLOOP_MIN_FIT_INTERVAL_SECONDS", "-1"),
        ("TAGLOOP_NEW_TAG_MIN_SUPPORT", "0"),
        ("TAGLOOP_PROMOTION_TOLERANCE", "2"),
        ("TAGLOOP_ADMIN_TOKEN", "short"),
        ("TAGLOOP_DATA_DIR", " "),
    ],
)
def test_bad_settings_fail_naming_the_variable(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        LearnerSettings.from_env({name: value})


def test_a_fit_triggered_at_the_threshold_takes_exactly_the_samples_up_to_it():
    assert fit_snapshot(99, 0, 100, requested=False, backlog=False) is None
    assert fit_snapshot(100, 0, 100, requested=False, backlog=False) == 100
    # 250 arrive in one batch: the first fit takes 100, the rest count toward the next,
    assert fit_snapshot(250, 0, 100, requested=False, backlog=False) == 100
    # which, being due as soon as the first ends, takes everything (no lag under a flood).
    assert fit_snapshot(250, 100, 100, requested=False, backlog=True) == 250
    assert fit_snapshot(250, 250, 100, requested=False, backlog=True) is None


def test_a_requested_fit_takes_everything_even_below_the_threshold():
    assert fit_snapshot(7, 5, 100, requested=True, backlog=False) == 7


def evaluation(f1: dict[str, float], support: int = 40, new: dict | None = None) -> dict:
    """A stored evaluation: per-tag F1 on the test set (each tag with `support` titles)."""
    return {
        "metrics": {"f1_macro": sum(f1.values()) / len(f1)},
        "tags": {tag: {"f1": v, "support": support, "chosen": support} for tag, v in f1.items()},
        "new_tags": new or {},
    }


RULES = GateRules(budget=0.01, tag_floor=0.15, tag_min_support=30)
BEST = evaluation({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.5})


def verdicts(decision) -> dict[str, bool]:
    return {v["rule"]: v["passed"] for v in decision.rules}


def test_the_first_model_is_promoted_without_a_comparison():
    decision = gate(evaluation({"a": 0.3}), None, RULES)
    assert (decision.promoted, decision.label) == (True, "bootstrap")
    assert verdicts(decision) == {"bootstrap": True}


def test_gate_promotes_within_the_budget_and_records_every_rule():
    decision = gate(evaluation({"a": 0.6, "b": 0.49, "c": 0.39, "d": 0.5}), BEST, RULES)
    assert decision.promoted and decision.label == "gate_passed"
    assert verdicts(decision) == {
        "f1_macro_budget": True,
        "tag_floor": True,
        "new_tag_floor": True,
        "validated_budget": True,
    }
    stored = decision.as_metadata("v-best")
    assert stored["compared_with"] == "v-best" and stored["rules"] == decision.rules


def test_small_losses_cannot_add_up_against_the_best():
    """Each step loses less than the budget against its predecessor, but the gate compares
    with the best promoted model, so the second step is refused."""
    step1 = evaluation({"a": 0.6, "b": 0.5, "c": 0.37, "d": 0.5})  # -0.0075
    assert gate(step1, BEST, RULES).promoted
    step2 = evaluation({"a": 0.6, "b": 0.5, "c": 0.34, "d": 0.5})  # -0.015 in total
    assert gate(step2, step1, RULES).promoted  # what a per-step gate would have done
    decision = gate(step2, best_promoted_of(BEST, step1), RULES)
    assert not decision.promoted and decision.label == "f1_macro_budget"
    assert "0.4850" in decision.reason and "0.5000" in decision.reason


def best_promoted_of(*evaluations: dict[str, Any]) -> Mapping[str, Any]:
    versions = [
        {**e, "version": f"v{i}", "decision": {"promoted": True}, "test_data_sha256": "t"}
        for i, e in enumerate(evaluations)
    ]
    best = best_promoted(
        [*versions, {**BEST, "version": "x", "decision": {"promoted": False}}], "t"
    )
    assert best is not None
    return best


def test_best_promoted_ignores_rejected_versions_and_other_test_sets():
    better = evaluation({"a": 0.9, "b": 0.9, "c": 0.9, "d": 0.9})
    versions = [
        {**BEST, "version": "v1", "decision": {"promoted": True}, "test_data_sha256": "t"},
        {**better, "version": "v2", "decision": {"promoted": False}, "test_data_sha256": "t"},
        {**better, "version": "v3", "decision": {"promoted": True}, "test_data_sha256": "old"},
    ]
    assert best_promoted(versions, "t")["version"] == "v1"
    assert best_promoted(versions, "other") is None


def test_a_lost_tag_fails_its_floor_even_within_the_budget():
    many = {f"t{i}": 0.5 for i in range(40)}
    best = evaluation(many)
    erased = evaluation({**many, "t7": 0.2})  # -0.0075 F1 macro: within the budget
    decision = gate(erased, best, RULES)
    assert verdicts(decision) == {
        "f1_macro_budget": True,
        "tag_floor": False,
        "new_tag_floor": True,
        "validated_budget": True,
    }
    assert decision.label == "tag_floor" and "t7 0.50->0.20" in decision.reason
    # A tag with too few test titles for a stable F1 has no floor.
    assert gate(evaluation({**many, "t7": 0.2}, support=10), evaluation(many, 10), RULES).promoted


def test_new_tags_count_on_their_slice_not_as_zero_on_the_test_set():
    """A new tag's test F1 (support 0) is left out of the gate's F1 macro; its held-out F1
    is compared with the best's."""
    learned = evaluation({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.5}, new={"rust": {"f1": 0.7}})
    learned["tags"]["rust"] = {"f1": 0.0, "support": 0, "chosen": 3}
    assert gate_f1_macro(learned) == gate_f1_macro(BEST)
    assert gate(learned, BEST, RULES).promoted
    forgotten = evaluation({"a": 0.6, "b": 0.5, "c": 0.4, "d": 0.5}, new={"rust": {"f1": 0.3}})
    decision = gate(forgotten, learned, RULES)
    assert not decision.promoted and decision.label == "new_tag_floor"


def with_validated(base: dict[str, Any], digest: str, f1: float | None) -> dict[str, Any]:
    metrics = None if f1 is None else {"f1_macro": f1}
    return {**base, "validated": {"version": 1, "digest": digest, "size": 50, "metrics": metrics}}


def test_the_validated_set_is_one_more_budget_on_the_same_digest():
    best = with_validated(BEST, "d1", 0.60)
    within = gate(with_validated(BEST, "d1", 0.595), best, RULES)
    assert within.promoted and verdicts(within)["validated_budget"]
    worse = gate(with_validated(BEST, "d1", 0.58), best, RULES)
    assert not worse.promoted and worse.label == "validated_budget"
    assert "0.5800 vs best promoted 0.6000" in worse.reason
    # Another digest (the set grew since the best was scored) or an empty set: nothing to
    # compare, the rule passes and says why.
    for candidate in (with_validated(BEST, "d2", 0.1), with_validated(BEST, "d1", None), BEST):
        decision = gate(candidate, best, RULES)
        assert decision.promoted
        [rule] = [v for v in decision.rules if v["rule"] == "validated_budget"]
        assert rule["passed"]
        assert "nothing to compare" in rule["detail"] or "no validated" in rule["detail"]


def stored(title: str, tags: list[str]) -> StoredFeedback:
    return StoredFeedback.from_feedback(Feedback(title=title, tags=tags), "2026-01-01T00:00:00Z")


def test_new_tags_are_held_back_until_enough_distinct_titles_carry_them():
    bootstrap = Corpus(["How to sort a list in Python?"], [["python"]])
    rows = [
        stored("Tensor shapes in TensorFlow", ["tensorflow", "python"]),
        stored("Keras model in TensorFlow", ["tensorflow"]),
        stored("What is pyhton?", ["pyhton"]),  # a typo, alone
    ]
    data = training_corpus(bootstrap, rows, min_support=3)
    assert data.held_back == {"pyhton": 1, "tensorflow": 2}
    # Rows keep their known tags; rows with nothing left are not trained on.
    assert data.train.tags == [["python"], ["python"]]

    rows.append(stored("Install TensorFlow on Windows", ["tensorflow"]))
    data = training_corpus(bootstrap, rows, min_support=3)
    assert data.held_back == {"pyhton": 1}
    carrying = sorted(data.train.titles[1:] + data.new_tag_slice.titles)
    assert carrying == sorted(row.title for row in rows[:2] + rows[3:])


def test_a_correction_overrides_older_labels_of_the_same_title():
    bootstrap = Corpus(["How to sort a list in Python?", "Java streams"], [["python"], ["java"]])
    rows = [
        stored("how to sort a  list in python?", ["python", "sorting-wrong"]),
        stored("How to sort a list in Python?", ["python", "list"]),
    ]
    data = training_corpus(bootstrap, rows, min_support=1)
    pairs = sorted(zip(data.train.titles, data.train.tags, strict=True)) + sorted(
        zip(data.new_tag_slice.titles, data.new_tag_slice.tags, strict=True)
    )
    assert pairs == [
        ("How to sort a list in Python?", ["python", "list"]),
        ("Java streams", ["java"]),
    ]


def test_one_in_five_titles_with_a_new_tag_is_held_out_to_judge_it():
    bootstrap = Corpus(["How to sort a list in Python?"], [["python"]])
    rows = [stored(f"Ownership question number {i}", ["rust"]) for i in range(200)]
    data = training_corpus(bootstrap, rows, min_support=3)
    assert 25 <= len(data.new_tag_slice) <= 55
    assert len(data.train) + len(data.new_tag_slice) == 201
    again = training_corpus(bootstrap, rows[:100], min_support=3)
    assert set(again.new_tag_slice.titles) <= set(data.new_tag_slice.titles), "stable slice"


def test_corpus_digest_identifies_the_exact_training_rows():
    one = Corpus(["a", "b"], [["x"], ["y"]])
    assert one.digest() == Corpus(["a", "b"], [["x"], ["y"]]).digest()
    assert one.digest() != Corpus(["a", "b"], [["x"], ["z"]]).digest()


def test_online_quality_is_micro_precision_and_recall_over_a_sliding_window():
    quality = OnlineQuality(window=2)
    assert quality.summary() == {"window": 0, "precision": None, "recall": None}
    assert not quality.add([], ["python"])  # nothing was predicted: nothing to score
    quality.add(["python", "django"], ["python"])  # 1 of 2 right, 1 of 1 found
    assert (quality.precision(), quality.recall()) == (0.5, 1.0)
    quality.add(["java"], ["java", "spring"])
    assert (quality.precision(), quality.recall()) == (2 / 3, 2 / 3)
    quality.add(["c"], ["c++"])  # the first item leaves the window
    assert quality.summary() == {"window": 2, "precision": 0.5, "recall": 1 / 3}


def test_a_new_tag_needs_distinct_annotators_not_just_distinct_titles():
    """Issue 11, reproduction 10: one client, three titles, a new tag: still held back."""
    bootstrap = Corpus(["How to sort a list in Python?"], [["python"]])

    def by(annotator: str, title: str) -> StoredFeedback:
        feedback = Feedback.from_dict(
            {"title": title, "tags": ["zzpwned-tag"], "annotator": annotator}
        )
        return StoredFeedback.from_feedback(feedback, "2026-01-01T00:00:00Z")

    one_client = [by("addr:1", f"Title number {i}") for i in range(3)]
    data = training_corpus(bootstrap, one_client, min_support=3, min_annotators=3)
    assert data.held_back == {"zzpwned-tag": 3}
    assert data.train.tags == [["python"]] and not data.new_tag_slice.tags

    three = [by(f"anon:{i}", f"Title number {i}") for i in range(3)]
    data = training_corpus(bootstrap, three, min_support=3, min_annotators=3)
    assert data.held_back == {}
    assert data.train.tags[1:] + data.new_tag_slice.tags == [["zzpwned-tag"]] * 3


def test_agreement_compares_distinct_annotators_on_the_same_title():
    agreement = Agreement()
    assert agreement.summary() == {"titles": 0, "pairs": 0, "overall": None, "per_tag": {}}
    assert math.isnan(agreement.overall())
    agreement.add("Parse JSON in Python", ["python"], "anon:a")
    agreement.add("parse json in python", ["python", "json"], "anon:b")  # same title
    agreement.add("Parse JSON in Python", ["python", "json"], None)  # nobody: not compared
    agreement.add("A title only one person corrected", ["java"], "anon:a")
    agreement.add("Sort a list", ["python"], "anon:a")
    agreement.add("Sort a list", ["python"], "anon:a")  # the same annotator twice: one opinion
    summary = agreement.summary()
    assert (summary["titles"], summary["pairs"]) == (1, 1)
    assert summary["overall"] == 0.5  # {python} vs {python, json}
    assert summary["per_tag"] == {
        "python": {"agreement": 1.0, "pairs": 1},
        "json": {"agreement": 0.0, "pairs": 1},
    }
    agreement.add("Sort a list", ["python", "sorting"], "anon:b")
    assert agreement.summary()["pairs"] == 2
    assert agreement.overall() == (0.5 + 0.5) / 2


def test_titles_awaiting_a_second_opinion_are_offered_to_others_oldest_first():
    agreement = Agreement()
    agreement.add("First  title", ["python"], "anon:a")
    agreement.add("Second title", ["java"], "anon:b")
    agreement.add("Third title", ["go"], "anon:a")
    agreement.add("Anonymous title", ["go"], None)
    assert agreement.awaiting_second_opinion("anon:c", 10) == [
        "First  title",
        "Second title",
        "Third title",
    ]
    assert agreement.awaiting_second_opinion("anon:a", 10) == ["Second title"]
    assert agreement.awaiting_second_opinion(None, 2) == ["First  title", "Second title"]
    agreement.add("first title", ["python"], "anon:b")  # the second opinion arrived
    assert agreement.awaiting_second_opinion("anon:c", 10) == ["Second title", "Third title"]
