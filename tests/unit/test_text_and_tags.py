"""Title analysis and user tag normalisation."""

import pytest

from tagloop.domain.tags import MAX_TAG_LENGTH, InvalidTag, normalize_tag, normalize_tags
from tagloop.domain.text import analyze, normalize_title, tokenize


def test_programming_tokens_survive_tokenisation():
    tokens = tokenize("Using C++ and C# with .NET, node.js & asp.net-mvc in python-3.x.")
    assert tokens == [
        "using", "c++", "and", "c#", "with", ".net", "node.js", "asp.net-mvc", "in", "python-3.x",
    ]  # fmt: skip


def test_normalize_title_folds_case_width_and_whitespace():
    assert normalize_title("  \uff30ython\tLIST   comprehension ") == "python list comprehension"


def test_analyze_adds_bigrams_after_unigrams():
    assert analyze("Sort a dict") == ["sort", "a", "dict", "sort a", "a dict"]
    assert analyze("") == []
    assert analyze("?!") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Python", "python"),
        ("  JS ", "javascript"),
        ("Ruby on Rails", "ruby-on-rails"),
        ("sql   server", "sql-server"),
        ("c#", "c#"),
        ("C++", "c++"),
        (".NET", ".net"),
        ("node.js", "node.js"),
        ("nodejs", "node.js"),
        ("python_3.x", "python-3.x"),
        ("objc", "objective-c"),
    ],
)
def test_normalize_tag(raw, expected):
    assert normalize_tag(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("bad tag!", "not a valid"),
        ("-leading", "not a valid"),
        ("trailing-", "not a valid"),
        ("dot.", "not a valid"),
        ("---", "not a valid"),
        ("x" * (MAX_TAG_LENGTH + 1), "longer than"),
        ("ünïcode", "not a valid"),
    ],
)
def test_invalid_tags_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(InvalidTag, match=reason):
        normalize_tag(raw)


def test_non_string_tags_are_rejected():
    with pytest.raises(InvalidTag, match="must be a string"):
        normalize_tag(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidTag, match="must be a list"):
        normalize_tags("python")  # type: ignore[arg-type]


def test_normalize_tags_deduplicates_after_normalisation_keeping_order():
    assert normalize_tags(["JS", "python", "javascript", "Python "]) == ["javascript", "python"]
