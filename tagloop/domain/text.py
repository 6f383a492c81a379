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
    return _TOKEN.findall(normalize_title(title))


def analyze(title: str) -> list[str]:
    """Word unigrams and bigrams of the normalised title."""
    tokens = tokenize(title)
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def char_grams(title: str, n: int) -> list[str]:
    """Character n-grams of each space-padded word of the normalised title (scikit-learn's
    `char_wb`): they match misspellings, inflections and names glued to punctuation
    ("mysqli_query(" shares "mysq" with "mysql") that word tokens miss. A word shorter
    than n yields itself, padded."""
    grams = []
    for word in normalize_title(title).split():
        padded = f" {word} "
        if len(padded) <= n:
            grams.append(padded)
        else:
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams
