"""System (non-Python) tools the test suite drives: find them, install them, or name them.

`./dev test` runs `./dev deps` first, which runs this module. Every Python
package comes from the lock; what the lock cannot carry is listed here once,
with the command the tests look for and the Debian package that provides it.
A missing tool is installed with apt-get when this runs as root on a Debian
or Ubuntu machine; otherwise the run stops with one message naming every
package to install, rather than failing (or skipping) tests one by one.

Another tier that needs a tool adds a `Tool` to `TOOLS`.

    python -m tagloop_dev.system_deps            # ensure everything
    python -m tagloop_dev.system_deps --check    # only report, exit 1 if anything is missing
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

APT_GET = "apt-get"


@dataclass(frozen=True)
class Tool:
    """One command on PATH (or at one of `paths`) and the Debian package that installs it."""

    command: str
    package: str
    why: str
    paths: tuple[str, ...] = ()

    def found(self) -> bool:
        return shutil.which(self.command) is not None or any(Path(p).exists() for p in self.paths)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "chromium",
        "chromium",
        "headless browser tests (tests/e2e/test_ui_browser.py)",
        ("/usr/bin/chromium",),
    ),
    Tool("promtool", "prometheus", "alert-rule tests (tests/infra/test_observability.py)"),
)


def missing(tools: Sequence[Tool] = TOOLS) -> list[Tool]:
    """The tools not installed here."""
    return [tool for tool in tools if not tool.found()]


def can_install() -> bool:
    """apt-get is here and we are root (no sudo: CI and containers run as root)."""
    return shutil.which(APT_GET) is not None and os.geteuid() == 0


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages, waiting for the dpkg lock another install may hold."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([APT_GET, *lock_wait, "update", "-qq"], check=True, env=env)
    install = [APT_GET, *lock_wait, "install", "-y", "-qq", "--no-install-recommends"]
    subprocess.run([*install, *packages], check=True, env=env)


def explain(tools: Sequence[Tool]) -> str:
    lines = ["dev: these system tools are missing:"]
    lines += [f"  {tool.command:<10} for {tool.why}" for tool in tools]
    packages = " ".join(sorted({tool.package for tool in tools}))
    lines.append(f"install them (Debian/Ubuntu): sudo apt-get install {packages}")
    lines.append("(as root with apt-get available, ./dev test installs them itself)")
    return "\n".join(lines)


def ensure(tools: Sequence[Tool] = TOOLS, install: bool = True) -> int:
    """0 when every tool is present (installing what is missing if allowed and possible)."""
    absent = missing(tools)
    if absent and install and can_install():
        packages = sorted({tool.package for tool in absent})
        print(f"dev: apt-get install {' '.join(packages)}", file=sys.stderr)
        try:
            apt_install(packages)
        except subprocess.CalledProcessError as error:
            print(f"dev: apt-get failed ({error})", file=sys.stderr)
        absent = missing(tools)
    if absent:
        print(explain(absent), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report only, never install")
    args = parser.parse_args(argv)
    return ensure(install=not args.check)


if __name__ == "__main__":
    sys.exit(main())
