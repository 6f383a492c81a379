"""Parsing JSON that tagloop can represent, store and echo back, or a precise refusal.

Python's `json` accepts more than RFC 8259 interoperable JSON: `NaN` and
`Infinity`, duplicate keys (the last one silently wins), lone UTF-16
surrogate escapes (`"\\ud800"`, which no UTF-8 file can hold), integers of any
length (until the interpreter's 4,300-digit guard raises a bare ValueError)
and nesting until the stack runs out. Each of those either crashed a handler
(a 5xx) or poisoned the learner's store, so both the HTTP edge and the message
reader parse with `loads` here and map `JsonError.code` to their own errors.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""Arrays and objects nested deeper than this are refused (no payload needs more than 3)."""
MAX_NUMBER_CHARS = 100
"""Longest number literal accepted; no field is a number, extra fields must stay cheap."""


class JsonError(ValueError):
    """Input that is not representable JSON; `code` is a stable label for errors and metrics."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonError("number_too_large", f"a number has more than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonError("number_too_large", f"a number has more than {MAX_NUMBER_CHARS} digits")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JsonError("invalid_number", f"{text[:20]}... overflows a double")
    return value


def _constant(name: str) -> Any:
    raise JsonError("invalid_number", f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonError("duplicate_key", f"key {key[:40]!r} appears more than once")
            seen.add(key)
    return result


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonError(
            "invalid_unicode", "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        ) from None


def _check_tree(value: Any) -> None:
    """Depth and text checks without recursion (the input decides the shape)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise JsonError("too_deep", f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def loads(data: bytes | str) -> Any:
    """The value of a UTF-8 JSON document, or `JsonError` naming what is wrong with it."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as error:
        raise JsonError("malformed_json", f"body is not UTF-8 ({error.reason})") from None
    try:
        value = json.loads(
            text,
            parse_int=_integer,
            parse_float=_real,
            parse_constant=_constant,
            object_pairs_hook=_unique_keys,
        )
    except RecursionError:
        raise JsonError("too_deep", f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        raise JsonError("malformed_json", f"not valid JSON: {error}") from None
    _check_tree(value)
    return value
