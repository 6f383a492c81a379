"""The validated test set: agreement rule, canonical digest, versions, split from training."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from learning_service.store import StoredFeedback
from learning_service.training import Corpus
from learning_service.validated import (
    ValidatedSet,
    ValidatedVersions,
    agreed_tags,
    build,
    per_tag_f1,
    score_candidate,
    split_training,
    without_validated,
)
from tagloop.domain.bundle import read_metadata


def row(title: str, tags: list[str], annotator: str | None, n: int = 0) -> StoredFeedback:
    return StoredFeedback(
        feedback_id=f"{annotator}-{title}-{n}",
        title=title,
        tags=tags,
        predicted_tags=[],
        model_version=None,
        submitted_at="2026-01-01T00:00:00.000Z",
        received_at="2026-01-01T00:00:00.000Z",
        annotator=annotator,
    )


def test_two_annotators_with_the_same_tag_set_validate_a_title() -> None:
    validated = build(
        [
            row("How to  Sort a LIST?", ["python", "list"], "anon:a"),
            row("how to sort a list?", ["list", "python"], "anon:b"),
            row("Only one annotator", ["java"], "anon:a"),
            row("Two people disagree", ["java"], "anon:a"),
            row("Two people disagree", ["kotlin"], "anon:b"),
        ]
    )
    assert validated.entries == {"how to sort a list?": ("list", "python")}


def test_the_same_annotator_twice_and_anonymous_rows_do_not_count() -> None:
    validated = build(
        [
            row("Title", ["python"], "anon:a", 1),
            row("Title", ["python"], "anon:a", 2),
            row("Other", ["python"], None, 1),
            row("Other", ["python"], None, 2),
        ]
    )
    assert len(validated) == 0


def test_the_latest_correction_of_each_annotator_counts() -> None:
    rows = [row("Title", ["python"], "anon:a"), row("Title", ["python"], "anon:b")]
    assert len(build(rows)) == 1
    assert len(build([*rows, row("Title", ["java"], "anon:b", 2)])) == 0


def test_a_unique_plurality_of_at_least_two_decides() -> None:
    assert agreed_tags({"a": ("x",), "b": ("x",), "c": ("y",)}) == ("x",)
    assert agreed_tags({"a": ("x",), "b": ("x",), "c": ("y",), "d": ("y",)}) is None
    assert agreed_tags({"a": ("x",), "b": ("y",)}) is None
    assert agreed_tags({}) is None


def test_the_digest_is_sha256_of_the_sorted_canonical_lines() -> None:
    validated = ValidatedSet({"b title": ("z",), "a title": ("x", "y")})
    expected = b'["a title",["x","y"]]\n["b title",["z"]]\n'
    assert validated.canonical() == expected
    assert validated.digest() == hashlib.sha256(expected).hexdigest()
    assert ValidatedSet({}).digest() == hashlib.sha256(b"").hexdigest()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.lists(st.sampled_from(["python", "java", "c++", "é"]), min_size=1, unique=True),
        max_size=8,
    )
)
def test_the_digest_ignores_insertion_order(entries: dict[str, list[str]]) -> None:
    forward = ValidatedSet({title: tuple(sorted(tags)) for title, tags in entries.items()})
    backward = ValidatedSet(dict(reversed(list(forward.entries.items()))))
    assert forward.digest() == backward.digest()
    lines = forward.canonical().decode().split("\n")[:-1]
    assert [json.loads(line)[0] for line in lines] == sorted(entries)


def test_validated_titles_are_never_trained_on_bootstrap_copies_included() -> None:
    validated = ValidatedSet({"how to sort a list?": ("python",)})
    train = Corpus(
        ["How to sort a list?", "Unrelated", "HOW  TO SORT A LIST?"],
        [["python"], ["java"], ["list"]],
    )
    assert without_validated(train, validated) == Corpus(["Unrelated"], [["java"]])


def test_versions_advance_only_when_the_digest_changes(tmp_path: Path) -> None:
    versions = ValidatedVersions(tmp_path / "validated")
    assert versions.latest() is None and versions.latest_size() == 0
    first = versions.record(ValidatedSet({"a": ("x",)}))
    again = versions.record(ValidatedSet({"a": ("x",)}))
    second = versions.record(ValidatedSet({"a": ("x",), "b": ("y",)}))
    assert (first.version, again.version, second.version) == (1, 1, 2)
    assert [v["version"] for v in versions.versions()] == [1, 2]
    assert versions.latest() == second.summary() and versions.latest_size() == 2
    assert (tmp_path / "validated" / "v000002.jsonl").read_bytes() == second.canonical()


def test_a_recorded_version_reads_back_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    versions = ValidatedVersions(tmp_path)
    recorded = versions.record(ValidatedSet({"a title é": ("x", "y"), "b": ("z",)}))
    assert versions.load(1) == recorded
    (tmp_path / "v000001.jsonl").write_bytes(b'["a title \xc3\xa9",["x"]]\n')
    with pytest.raises(ValueError, match="does not match its digest"):
        versions.load(1)
    with pytest.raises(ValueError, match="never recorded"):
        versions.load(2)


def test_a_torn_index_line_is_ignored(tmp_path: Path) -> None:
    versions = ValidatedVersions(tmp_path)
    versions.record(ValidatedSet({"a": ("x",)}))
    with versions.index.open("a") as handle:
        handle.write('{"version": 2, "dig')
    assert versions.latest() == ValidatedSet({"a": ("x",)}, version=1).summary()


def test_split_training_records_the_set_and_drops_its_titles(tmp_path: Path) -> None:
    rows = [row("Agreed title", ["python"], "anon:a"), row("agreed title", ["python"], "anon:b")]
    train = Corpus(["Agreed title", "agreed title", "Kept"], [["python"], ["python"], ["go"]])
    kept, validated = split_training(train, rows, tmp_path)
    assert kept == Corpus(["Kept"], [["go"]])
    assert validated.summary() == ValidatedVersions(tmp_path / "validated").latest()
    assert validated.version == 1 and len(validated) == 1


def test_per_tag_f1_counts_new_tags() -> None:
    scores = per_tag_f1([["python", "brand-new"], ["java"]], [["python"], ["java", "python"]])
    assert scores == {
        "brand-new": {"f1": 0.0, "support": 1},
        "java": {"f1": 1.0, "support": 1},
        "python": {"f1": 2 / 3, "support": 1},
    }


def test_a_candidate_is_scored_on_the_set_with_its_digest(model_bundle: Path) -> None:
    sha256 = read_metadata(model_bundle)["sha256"]
    validated = ValidatedSet(
        {"how do i parse json in python": ("json", "python"), "a tag no model knows": ("new-tag",)},
        version=3,
    )
    scored = score_candidate(str(model_bundle), sha256, validated)
    assert {key: scored[key] for key in ("version", "digest", "size")} == validated.summary()
    assert scored["metrics"]["rows"] == 2
    assert 0.0 <= scored["metrics"]["f1_macro"] <= 1.0
    assert scored["metrics"]["per_tag"]["new-tag"] == {"f1": 0.0, "support": 1}
    assert score_candidate(str(model_bundle), sha256, ValidatedSet({}))["metrics"] is None


corrections = st.lists(
    st.tuples(
        st.sampled_from(["Sort a list", "sort a  LIST", "Parse JSON", "Regex"]),
        st.lists(st.sampled_from(["python", "json", "regex"]), min_size=1, max_size=2),
        st.sampled_from(["anon:a", "anon:b", "anon:c", None]),
    ),
    max_size=12,
)


@given(corrections)
def test_every_validated_label_is_the_latest_choice_of_a_unique_plurality(
    given_rows: list[tuple[str, list[str], str | None]],
) -> None:
    rows = [row(title, tags, who, n) for n, (title, tags, who) in enumerate(given_rows)]
    latest: dict[str, dict[str, frozenset[str]]] = {}
    for title, tags, who in given_rows:
        if who:
            latest.setdefault(" ".join(title.casefold().split()), {})[who] = frozenset(tags)
    validated = build(rows)
    for title, by_annotator in latest.items():
        votes = Counter(by_annotator.values()).most_common()
        unique_plurality = votes[0][1] >= 2 and (len(votes) == 1 or votes[1][1] < votes[0][1])
        assert validated.contains(title) == unique_plurality
        if unique_plurality:
            assert frozenset(validated.entries[title]) == votes[0][0]
    assert set(validated.entries) <= set(latest)
    # One more annotator agreeing with a label never removes the title or changes it.
    for title, label in validated.entries.items():
        again = build([*rows, row(title, list(label), "anon:new")])
        assert again.entries[title] == label
