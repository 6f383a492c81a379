"""The unit tier runs in-process: fast, no servers but in-process threads."""

from __future__ import annotations

import subprocess
from typing import Any, NoReturn

import pytest


@pytest.fixture(autouse=True)
def _no_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a child process fails: it belongs in tests/integration."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(
            f"tests/unit is in-process only; a test that runs {args[:1]} belongs in"
            " tests/integration"
        )

    monkeypatch.setattr(subprocess, "Popen", refuse)
