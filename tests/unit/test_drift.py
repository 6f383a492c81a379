"""Drift measurement: the training prior, out-of-vocabulary words, and the per-request hook."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from inference_service.drift import DriftMonitor
from inference_service.model_holder import LoadedModel
from tagloop.domain.data import LabeledData
from tagloop.domain.drift import TAG_COUNTS_KEY, tag_counts, tag_shares, unknown_words
from tagloop.domain.model import TagModel
from tagloop.domain.text import tokenize
from tests.fixtures.model import FitModel

ROWS = 300


@pytest.fixture(scope="module")
def small_model(train_data: LabeledData, fit_model: FitModel) -> TagModel:
    return fit_model(TagModel(min_df=1, n_jobs=1), train_data.titles[:ROWS], train_data.tags[:ROWS])


def loaded(model: TagModel, version: str, counts: dict[str, int] | None) -> LoadedModel:
    metadata = {} if counts is None else {TAG_COUNTS_KEY: counts}
    return LoadedModel(model, version, metadata, "2026-01-01T00:00:00Z", time.time())


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_tag_counts_count_titles_per_tag_once_sorted_by_tag() -> None:
    counts = tag_counts([["python", "pandas"], ["python", "python"], ["java"]])
    assert counts == {"java": 1, "pandas": 1, "python": 2}
    assert list(counts) == sorted(counts)


def test_tag_shares_are_a_distribution_over_the_training_assignments() -> None:
    shares = tag_shares({TAG_COUNTS_KEY: {"python": 3, "java": 1}})
    assert shares == {"python": 0.75, "java": 0.25}


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {TAG_COUNTS_KEY: None},
        {TAG_COUNTS_KEY: ["python"]},
        {TAG_COUNTS_KEY: {"python": 0}},
        {TAG_COUNTS_KEY: {"python": True, "java": "3", "c": -2, "d": 1.5}},
    ],
)
def test_versions_without_valid_counts_have_no_prior(metadata: dict[str, object]) -> None:
    assert tag_shares(metadata) == {}


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.integers(-5, 10**9), max_size=50))
def test_any_valid_counts_give_shares_summing_to_one(counts: dict[str, int]) -> None:
    shares = tag_shares({TAG_COUNTS_KEY: counts})
    positive = {tag for tag, count in counts.items() if count > 0}
    assert set(shares) == positive
    if positive:
        assert sum(shares.values()) == pytest.approx(1.0)
        assert all(0 < share <= 1 for share in shares.values())


def test_unknown_words_are_those_missing_from_the_vocabulary() -> None:
    vocabulary = {"python": 0, "list": 1, "python list": 2}
    assert unknown_words(["python", "list", "zorblax", "python"], vocabulary) == 1
    assert unknown_words([], vocabulary) == 0


def test_the_hook_counts_words_unknown_words_and_chosen_tags(small_model: TagModel) -> None:
    monitor = DriftMonitor()
    titles = ["How to sort a list in python", "zorblax quuxification of flibbertigibbets"]
    predictions = small_model.predict(titles)
    words = sum(len(tokenize(title)) for title in titles)
    unknown = sum(unknown_words(tokenize(t), small_model.vocabulary_) for t in titles)
    assert unknown >= 3  # the made-up words of the second title
    chosen = [tag for prediction in predictions for tag in prediction.tags]
    before = {
        "words": sample("tagloop_inference_drift_words_total"),
        "unknown": sample("tagloop_inference_drift_unknown_words_total"),
        **{tag: sample("tagloop_inference_predicted_tags_total", tag=tag) for tag in chosen},
    }

    monitor.observe(loaded(small_model, "v-drift-1", None), predictions)

    assert sample("tagloop_inference_drift_words_total") - before["words"] == words
    assert sample("tagloop_inference_drift_unknown_words_total") - before["unknown"] == unknown
    for tag in set(chosen):
        moved = sample("tagloop_inference_predicted_tags_total", tag=tag) - before[tag]
        assert moved == chosen.count(tag)


def test_every_tag_of_the_model_has_a_series_from_the_first_prediction(
    small_model: TagModel,
) -> None:
    monitor = DriftMonitor()
    title = ["How to sort a list in python"]
    monitor.observe(loaded(small_model, "v-drift-2", None), small_model.predict(title))
    for tag in small_model.classes_.tolist():
        assert (
            REGISTRY.get_sample_value("tagloop_inference_predicted_tags_total", {"tag": tag})
            is not None
        )


def test_the_training_prior_follows_the_newest_version(small_model: TagModel) -> None:
    monitor = DriftMonitor()
    title = ["How to sort a list in python"]
    prediction = small_model.predict(title)
    monitor.observe(loaded(small_model, "v-prior-1", {"python": 3, "java": 1}), prediction)
    assert sample("tagloop_inference_training_tag_share", tag="python") == 0.75
    assert sample("tagloop_inference_training_tag_share", tag="java") == 0.25

    monitor.observe(loaded(small_model, "v-prior-2", {"java": 2, "c#": 2}), prediction)
    assert sample("tagloop_inference_training_tag_share", tag="python") == 0.0
    assert sample("tagloop_inference_training_tag_share", tag="java") == 0.5
    assert sample("tagloop_inference_training_tag_share", tag="c#") == 0.5

    # Further requests of a known version neither rebuild nor republish anything.
    monitor.observe(loaded(small_model, "v-prior-1", {"python": 1}), prediction)
    assert sample("tagloop_inference_training_tag_share", tag="java") == 0.5
