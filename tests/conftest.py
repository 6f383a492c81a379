"""Fixtures are grouped by concern in tests/fixtures/; each module is a plugin.

Tests live in tiers, one directory each, and every test carries its tier's
marker (`pytest -m unit`, `-m "not e2e"`):

- tests/unit: in-process only (no child process; tests/unit/conftest.py
  refuses one), the fast tier behind `./dev test:fast`;
- tests/integration: real servers as child processes (emulator, SeaweedFS,
  gunicorn, the learner, supervisord);
- tests/e2e: the whole local stack, the browser;
- tests/infra: the delivery files through their real validators;
- tests/containers: the real images and the Compose stack on a Docker engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.keys",
    "tests.fixtures.model",
    "tests.fixtures.pubsub",
    "tests.fixtures.infra",
    "tests.fixtures.s3",
    "tests.fixtures.inference",
    "tests.fixtures.learning",
    "tests.fixtures.browser",
    "tests.fixtures.ui",
    "tests.fixtures.observability",
    "tests.fixtures.stack",
    "tests.fixtures.containers",
]

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "infra", "containers")


def tier_of(path: Path) -> str | None:
    """The tier a test file belongs to: its directory right under tests/."""
    try:
        top = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return top if top in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, so `-m` selects tiers whatever paths are given."""
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
