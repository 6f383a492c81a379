"""The server's tag normalisation rules as data, so the browser's copy cannot drift.

`static/normalize.js` implements `tagloop.domain.tags.normalize_tag` step by step;
every table and constant it needs comes from here, derived from the Python
implementation at start-up rather than copied into JavaScript.
"""

from __future__ import annotations

import functools
import sys

from tagloop.domain.tags import ALIASES, MAX_TAG_LENGTH, TAG_SYNTAX


@functools.cache
def tag_rules() -> dict[str, object]:
    """JSON-ready rules: aliases, syntax, length limit and Python's Unicode tables.

    `whitespace` is every character Python's `str.strip()` and `\\s` treat as
    space; `fold` maps the characters whose `str.casefold()` differs from
    `str.lower()` (JavaScript's toLowerCase is the latter), e.g. "ß" -> "ss".
    """
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    return {
        "aliases": dict(ALIASES),
        "max_length": MAX_TAG_LENGTH,
        "syntax": TAG_SYNTAX.pattern,
        "whitespace": "".join(c for c in chars if c.isspace()),
        "fold": {c: c.casefold() for c in chars if c.casefold() != c.lower()},
    }
