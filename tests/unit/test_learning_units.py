"""The learner's pure decisions: settings, schedule, gate, held-back tags, online quality."""

from __future__ import annotations

import math

import pytest

from learning_service.agreement import Agreement
from learning_service.config import LearnerSettings
from learning_service.metrics import OnlineQuality
from learning_service.refit import fit_snapshot, gate
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


def test_gate_promotes_within_tolerance_and_rejects_a_regression():
    assert gate({"f1_macro": 0.3}, None, 0.01) == (
        {"promoted": True, "reason": "bootstrap: no current model to compare with"},
        "bootstrap",
    )
    decision, label = gate({"f1_macro": 0.495}, {"f1_macro": 0.5}, 0.01)
    assert decision["promoted"] and label == "gate_passed"
    decision, label = gate({"f1_macro": 0.48}, {"f1_macro": 0.5}, 0.01)
    assert not decision["promoted"] and label == "f1_macro_regression"
    assert "0.4800" in decision["reason"] and "0.5000" in decision["reason"]


def stored(title: str, tags: list[str]) -> StoredFeedback:
    return StoredFeedback.from_feedback(Feedback(title=title, tags=tags), "2026-01-01T00:00:00Z")


def test_new_tags_are_held_back_until_enough_distinct_titles_carry_them():
    bootstrap = Corpus(["How to sort a list in Python?"], [["python"]])
    rows = [
        stored("Tensor shapes in TensorFlow", ["tensorflow", "python"]),
        stored("Tensor shapes in TensorFlow", ["tensorflow"]),  # same title: no extra support
        stored("Keras model in TensorFlow", ["tensorflow"]),
        stored("What is pyhton?", ["pyhton"]),  # a typo, alone
    ]
    corpus, held_back = training_corpus(bootstrap, rows, min_support=3)
    assert held_back == {"pyhton": 1, "tensorflow": 2}
    # Rows keep their known tags; rows with nothing left are not trained on.
    assert corpus.tags == [["python"], ["python"]]

    rows.append(stored("Install TensorFlow on Windows", ["tensorflow"]))
    corpus, held_back = training_corpus(bootstrap, rows, min_support=3)
    assert held_back == {"pyhton": 1}
    assert corpus.tags[1:] == [
        ["tensorflow", "python"],
        ["tensorflow"],
        ["tensorflow"],
        ["tensorflow"],
    ]


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
    corpus, held_back = training_corpus(bootstrap, one_client, min_support=3, min_annotators=3)
    assert held_back == {"zzpwned-tag": 3}
    assert corpus.tags == [["python"]]

    three = [by(f"anon:{i}", f"Title number {i}") for i in range(3)]
    corpus, held_back = training_corpus(bootstrap, three, min_support=3, min_annotators=3)
    assert held_back == {}
    assert corpus.tags[1:] == [["zzpwned-tag"]] * 3


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
