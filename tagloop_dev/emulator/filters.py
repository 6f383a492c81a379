"""Subscription filters: the documented Pub/Sub filter grammar on message attributes.

A filter is parsed once, at create time (a malformed one is INVALID_ARGUMENT,
as on the service), into a predicate over a message's attributes:

    expr    := term (("AND" term)* | ("OR" term)*)   -- mixing needs parentheses
    term    := ("NOT" | "-") term | "(" expr ")" | atom
    atom    := attributes.KEY ("=" | "!=") "string"
             | attributes:KEY                          -- the key is present
             | hasPrefix(attributes.KEY, "prefix")

Keys are identifiers or backquoted/quoted strings; values are double- or
single-quoted strings with backslash escapes. A message the filter rejects is
acknowledged for that subscription at publish time (never delivered).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Attributes = Mapping[str, str]
Predicate = Callable[[Attributes], bool]

MAX_FILTER_BYTES = 256

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<op>!=|=|:|\(|\)|,|-|\.)
      | (?P<word>[A-Za-z0-9_]+)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """The filter does not follow the grammar; the message says where."""


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError(
                f"unexpected character at offset {position}: {text[position:][:10]!r}"
            )
        tokens.append(match.group(match.lastgroup or "word"))
        position = match.end()
    return tokens


def _unquote(token: str) -> str:
    if token[0] == "`":
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise FilterError(f"expected {expected or 'more input'}, found {token or 'the end'}")
        self.index += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.expr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()!r}")
        return predicate

    def expr(self) -> Predicate:
        terms = [self.term()]
        joiner: str | None = None
        while self.peek() in ("AND", "OR"):
            word = self.take()
            if joiner is not None and word != joiner:
                raise FilterError("AND and OR cannot be mixed without parentheses")
            joiner = word
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        if joiner == "AND":
            return lambda attributes: all(term(attributes) for term in terms)
        return lambda attributes: any(term(attributes) for term in terms)

    def term(self) -> Predicate:
        token = self.peek()
        if token in ("NOT", "-"):
            self.take()
            inner = self.term()
            return lambda attributes: not inner(attributes)
        if token == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if token == "hasPrefix":
            self.take()
            self.take("(")
            key = self.attribute(".")
            self.take(",")
            prefix = self.string()
            self.take(")")
            return lambda attributes: (
                attributes.get(key, None) is not None and attributes[key].startswith(prefix)
            )
        return self.comparison()

    def attribute(self, separator: str) -> str:
        self.take("attributes")
        self.take(separator)
        token = self.take()
        if token[0] in "\"'`":
            return _unquote(token)
        if not re.fullmatch(r"[A-Za-z0-9_]+", token):
            raise FilterError(f"expected an attribute key, found {token!r}")
        return token

    def string(self) -> str:
        token = self.take()
        if token[0] not in "\"'":
            raise FilterError(f"expected a quoted string, found {token!r}")
        return _unquote(token)

    def comparison(self) -> Predicate:
        if self.index + 1 < len(self.tokens) and self.tokens[self.index + 1] == ":":
            key = self.attribute(":")
            return lambda attributes: key in attributes
        key = self.attribute(".")
        operator = self.take()
        value = self.string()
        if operator == "=":
            return lambda attributes: attributes.get(key) == value
        if operator == "!=":
            return lambda attributes: attributes.get(key) != value
        raise FilterError(f"expected = or !=, found {operator!r}")


def compile_filter(text: str) -> Predicate | None:
    """The filter's predicate (None for the empty filter: everything matches)."""
    if not text:
        return None
    if len(text.encode()) > MAX_FILTER_BYTES:
        raise FilterError(f"filters are limited to {MAX_FILTER_BYTES} bytes")
    return _Parser(text).parse()
