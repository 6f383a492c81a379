"""Model version ids: the one pattern every part checks before touching a file or a key.

A version id names a directory in every replica's cache and a prefix in the
bucket, and it arrives over unauthenticated channels (a broadcast, a pointer
in the bucket, a URL path). So it is checked against a single strict
pattern, exactly what `new_version` makes, before any filesystem or S3
operation anywhere; `version_dir` then resolves the cache path and verifies
that it stays inside the cache directory, symlinks included.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from tagloop.errors import TagloopError

VERSION_PATTERN = re.compile(r"\d{8}T\d{9}Z-[0-9a-f]{6}")
"""UTC time to the millisecond, 'Z', then 6 lower-case hex digits: 20261122T051500123Z-1a2b3c."""


class InvalidVersion(TagloopError, ValueError):
    """A string that is not a model version id (and so must never become a path or a key)."""


def new_version() -> str:
    """A sortable unique version: UTC time to the millisecond, then random hex.

    Lexical order is creation order (to the millisecond), which is what
    `list_versions` and humans rely on; the suffix keeps two writers apart.
    """
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def check_version(version: object) -> str:
    """`version` itself if it is a version id; InvalidVersion (with a short, safe echo) if not."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        shown = repr(version)[:80]
        raise InvalidVersion(
            f"invalid model version {shown}: expected a version id like "
            "20261122T051500123Z-1a2b3c (UTC time to the millisecond, Z, 6 hex digits)"
        )
    return version


def version_dir(root: Path, version: object) -> Path:
    """`root/<version>`, checked: a valid id whose resolved path is a direct child of `root`.

    The resolution follows symlinks, so an entry planted as a link to
    elsewhere is refused rather than followed.
    """
    name = check_version(version)
    base = root.resolve()
    path = (base / name).resolve()
    if path.parent != base or path.name != name:
        raise InvalidVersion(f"cache entry for {name} resolves outside {base}: {path}")
    return path
