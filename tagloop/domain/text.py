"""Turning a question title into the tokens the model sees.

`analyze` and `char_grams` are the single source of features: the vectorizers
call them while training and the fast serving path calls them per request, so
the two can never drift apart.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

# Keeps programming tokens whole: "c++", "c#", ".net", "node.js", "asp.net-mvc",
# "python-3.x"; trailing punctuation ("end.") is not part of a token.
_TOKEN = re.compile(r"[\w#+.\-]*\w[#+]*|[#+]{1,2}")


def normalize_title(title: str) -> str:
    """Unicode-compatible, case-folded, whitespace-collapsed title."""
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def tokenize(title: str) -> list[str]:
    return words_of(normalize_title(title))


def words_of(normalized: str) -> list[str]:
    """`tokenize` of a title already normalised (the serving path normalises once)."""
    return _TOKEN.findall(normalized)


def analyze(title: str) -> list[str]:
    """Word unigrams and bigrams of the normalised title."""
    return with_bigrams(tokenize(title))


def with_bigrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def char_grams(title: str, n: int) -> list[str]:
    """Character n-grams of each space-padded word of the normalised title (scikit-learn's
    `char_wb`): they match misspellings, inflections and names glued to punctuation
    ("mysqli_query(" shares "mysq" with "mysql") that word tokens miss. A word shorter
    than n yields itself, padded."""
    return grams_of(normalize_title(title), n)


def grams_of(normalized: str, n: int) -> list[str]:
    """`char_grams` of a title already normalised."""
    grams = []
    for word in normalized.split():
        padded = f" {word} "
        if len(padded) <= n:
            grams.append(padded)
        else:
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams
