"""Normalising user-supplied tags to StackOverflow's tag syntax.

Users type tags freely in the UI ("JS", "Ruby on Rails", " c# "). Both the
inference service (before publishing feedback) and the learner (before storing
it) pass them through `normalize_tags`, so one spelling reaches the corpus.
"""

from __future__ import annotations

import re

MAX_TAG_LENGTH = 35
"""StackOverflow's own limit on tag length."""

# Lower-case letters, digits and + # - . ; must contain a letter or digit,
# must not end with a hyphen or dot; "c#", "c++", ".net", "node.js" are valid.
TAG_SYNTAX = re.compile(r"^(?=.*[a-z0-9])[a-z0-9+#.][a-z0-9+#.\-]*(?<![-.])$")

ALIASES: dict[str, str] = {
    "js": "javascript",
    "ecmascript": "javascript",
    "py": "python",
    "python3": "python-3.x",
    "python-3": "python-3.x",
    "python2": "python-2.7",
    "python-2": "python-2.7",
    "csharp": "c#",
    "c-sharp": "c#",
    "cpp": "c++",
    "cplusplus": "c++",
    "objc": "objective-c",
    "obj-c": "objective-c",
    "rails": "ruby-on-rails",
    "ror": "ruby-on-rails",
    "rails3": "ruby-on-rails-3",
    "node": "node.js",
    "nodejs": "node.js",
    "angular.js": "angularjs",
    "bootstrap": "twitter-bootstrap",
    "mac": "osx",
    "macos": "osx",
    "dotnet": ".net",
    "vbnet": "vb.net",
    "postgres": "postgresql",
    "mongo": "mongodb",
    "regexp": "regex",
    "golang": "go",
    "multi-threading": "multithreading",
}


class InvalidTag(ValueError):
    """A user-supplied tag that cannot be a StackOverflow tag; the message says why."""


def normalize_tag(raw: str) -> str:
    """Case-fold, trim, turn inner spaces into hyphens, resolve aliases, check syntax."""
    if not isinstance(raw, str):
        raise InvalidTag(f"tag must be a string, got {type(raw).__name__}")
    tag = re.sub(r"[\s_]+", "-", raw.strip().casefold())
    tag = re.sub(r"-{2,}", "-", tag)
    tag = ALIASES.get(tag, tag)
    if not tag:
        raise InvalidTag("tag is empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidTag(f"tag {tag[:40]!r} is longer than {MAX_TAG_LENGTH} characters")
    if not TAG_SYNTAX.match(tag):
        raise InvalidTag(
            f"tag {tag!r} is not a valid StackOverflow tag "
            "(letters, digits and + # - . only, not ending in - or .)"
        )
    return tag


def normalize_tags(raw_tags: list[str]) -> list[str]:
    """Normalise each tag and drop duplicates, keeping the user's order."""
    if not isinstance(raw_tags, list):
        raise InvalidTag(f"tags must be a list of strings, got {type(raw_tags).__name__}")
    seen: dict[str, None] = {}
    for raw in raw_tags:
        seen.setdefault(normalize_tag(raw), None)
    return list(seen)
