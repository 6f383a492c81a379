"""Compile the bytecode of what the local stack runs, once, on every core, as ./dev installs.

`./dev` keeps bytecode in `.venv/pycache` (PYTHONPYCACHEPREFIX). Left to the
first import, a fresh clone's first `./dev up` compiled scikit-learn, SciPy,
pandas, gRPC, Pub/Sub, boto3 and Flask inside the services as they started:
five processes at once, each compiling what it imports, the same modules
several times when two imported them together, on the way to the first
model. Compiling them here instead, right after the install, uses every core
with no duplicate work and leaves the first `up` the fitting alone.

Only the runtime packages are compiled: the project's [project.dependencies]
and what they require (from the lock's `# via` notes, `lock_subset`), the
local stack's supervisor, and the project's own packages; no test suites. The
whole venv (linters, browsers, Helm, pyarrow) would triple the work and the
bootstrap time (benchmarks/results/up.md).

    python -m tagloop_dev.bytecode    # from ./dev, with PYTHONPYCACHEPREFIX set
"""

from __future__ import annotations

import compileall
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tagloop_dev.lock_subset import closure, parse_lock, project_dependencies

ROOT = Path(__file__).resolve().parents[1]
LOCAL_STACK = ("supervisor",)
"""Packages `tagloop up` runs besides the runtime ones (SeaweedFS is a binary)."""
PROJECT_PACKAGES = ("tagloop", "tagloop_dev", "learning_service", "inference_service", "frontend")
SKIPPED_PARTS = frozenset({"tests", "testing", "_examples"})
"""Directories of test suites inside installed packages: never imported by the stack."""
CHUNK = 64


def runtime_distributions(root: Path = ROOT) -> list[str]:
    """Canonical names of the runtime closure and the local stack's packages."""
    entries = parse_lock((root / "requirements.lock").read_text())
    return closure(entries, [*project_dependencies(root / "pyproject.toml"), *LOCAL_STACK])


def _distribution_sources(name: str) -> Iterator[Path]:
    try:
        files = importlib.metadata.distribution(name).files or []
    except importlib.metadata.PackageNotFoundError:
        return  # a package for another platform (its marker excluded it)
    for file in files:
        if file.suffix == ".py" and not SKIPPED_PARTS.intersection(file.parts):
            yield Path(str(file.locate()))


def sources(root: Path = ROOT) -> list[Path]:
    """Every .py file to compile: the runtime packages' and the project's own."""
    found = [path for name in runtime_distributions(root) for path in _distribution_sources(name)]
    for package in PROJECT_PACKAGES:
        found += sorted((root / package).rglob("*.py"))
    return found


def _compile(paths: list[Path]) -> int:
    """How many of `paths` did not compile (a broken file fails at import, as it would)."""
    return sum(not compileall.compile_file(path, quiet=2) for path in paths)


def _chunks(paths: list[Path]) -> Iterable[list[Path]]:
    return (paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK))


def compile_all(paths: list[Path], workers: int | None = None) -> int:
    """Compile in `workers` processes (default: every core); returns the failures.

    A module already compiled and unchanged is skipped (compileall compares the
    source's size and mtime), so running this again costs little.
    """
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        return sum(pool.map(_compile, _chunks(paths)))


def main() -> int:
    if sys.pycache_prefix is None:
        print("bytecode: PYTHONPYCACHEPREFIX is not set; nothing to do", file=sys.stderr)
        return 0
    paths = sources()
    failed = compile_all(paths)
    if failed:  # not fatal: such a module is compiled (or fails) at import, as without this
        print(f"bytecode: {failed} of {len(paths)} files did not compile", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
