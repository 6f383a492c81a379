"""JSON the services cannot represent is refused with a precise code (issue 11, reproduction 5)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagloop.domain.strict_json import MAX_DEPTH, JsonError, loads


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"title": "x", "n": ' + b"1" * 4301 + b"}", "number_too_large"),
        (b'{"n": 1.' + b"5" * 200 + b"}", "number_too_large"),
        (b'{"n": 1e999}', "invalid_number"),
        (b'{"n": NaN}', "invalid_number"),
        (b'{"n": -Infinity}', "invalid_number"),
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b'{"title": "How do I \\ud800 parse"}', "invalid_unicode"),
        (b'{"\\udc00": 1}', "invalid_unicode"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"title": ', "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
    ],
)
def test_unrepresentable_json_is_refused_with_a_code(data: bytes, code: str) -> None:
    with pytest.raises(JsonError) as error:
        loads(data)
    assert error.value.code == code


def test_surrogate_pairs_and_ordinary_documents_are_fine() -> None:
    assert loads(b'{"t": "\\ud83d\\ude00", "n": [1, 2.5, -3e10, null, true]}') == {
        "t": "\U0001f600",
        "n": [1, 2.5, -3e10, None, True],
    }
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None


json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**50), max_value=10**50)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_documents)
def test_every_interoperable_document_parses_to_itself(document: object) -> None:
    assert loads(json.dumps(document).encode()) == document


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_either_parse_or_raise_json_error(data: bytes) -> None:
    with contextlib.suppress(JsonError):
        loads(data)
