"""The emulator's pure rules: the filter grammar and the retry backoff (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagloop_dev.emulator.filters import MAX_FILTER_BYTES, FilterError, compile_filter
from tagloop_dev.emulator.limits import Backoff

ATTRIBUTES = {"lang": "en-GB", "kind": "title", "with space": "yes", "quote": 'say "hi"'}


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ('attributes.lang = "en-GB"', True),
        ("attributes.lang = 'en-GB'", True),
        ('attributes.lang != "en-GB"', False),
        ('attributes.missing != "x"', True),
        ("attributes:kind", True),
        ("NOT attributes:kind", False),
        ("-attributes:kind", False),
        ('hasPrefix(attributes.lang, "en")', True),
        ('hasPrefix(attributes.missing, "")', False),
        ('attributes.`with space` = "yes"', True),
        ('attributes.quote = "say \\"hi\\""', True),
        ('attributes:lang AND attributes.kind = "body"', False),
        ('attributes:nope OR attributes.kind = "title"', True),
        ("NOT (attributes:nope OR attributes:lang) AND attributes:kind", False),
        ("((attributes:lang))", True),
    ],
)
def test_filter_expressions_follow_the_documented_grammar(expression: str, matches: bool) -> None:
    predicate = compile_filter(expression)
    assert predicate is not None
    assert predicate(ATTRIBUTES) is matches


@pytest.mark.parametrize(
    "expression",
    [
        "attributes:a AND attributes:b OR attributes:c",  # mixing needs parentheses
        "attributes.lang = en",
        'attributes.lang == "en"',
        "attributes.lang",
        "(attributes:lang",
        "attributes:lang)",
        "hasPrefix(attributes.lang)",
        'data = "x"',
        '"unterminated',
        "attributes:" + "k" * MAX_FILTER_BYTES,
    ],
)
def test_malformed_filters_are_refused(expression: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(expression)


def test_the_empty_filter_matches_everything() -> None:
    assert compile_filter("") is None


@given(st.text(max_size=80))
def test_any_text_either_compiles_or_is_refused_cleanly(text: str) -> None:
    try:
        predicate = compile_filter(text)
    except FilterError:
        return
    if predicate is not None:
        assert predicate(ATTRIBUTES) in (True, False)


def test_backoff_doubles_from_the_minimum_up_to_the_maximum() -> None:
    backoff = Backoff(minimum=1.0, maximum=5.0)
    assert [backoff.delay(attempt) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff(minimum=0.0, maximum=0.0).delay(1000) == 0.0
