"""The builder container runs the project's own tasks on a mounted checkout, as its owner.

The checkout is a copy owned by an unprivileged uid/gid (CI runs as root, whose
own files would prove nothing); the container runs with that uid/gid and the
flags of `./dev builder` (tests/infra checks the task's exact command), and
everything it leaves in the checkout must belong to that owner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tagloop_dev.base_image import ensure_terraform_image
from tagloop_dev.compose_stack import ComposeStack
from tests.fixtures.containers import Timings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
OWNER = (12345, 12345)  # not root, not the images' runtime user


def copy_checkout(target: Path) -> Path:
    """The checkout's files (tracked and new, not ignored ones) owned by OWNER."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for path in [target, *target.rglob("*")]:
        os.lchown(path, *OWNER)
    return target


def test_builder_runs_the_fast_tier_on_the_mounted_checkout_as_its_owner(
    built_stack: ComposeStack, container_timings: Timings, tmp_path: Path
) -> None:
    started = time.monotonic()
    if built_stack.local:  # hashicorp/terraform cannot be pulled either
        terraform = ensure_terraform_image(built_stack.engine)
        built_stack.variables["TAGLOOP_TERRAFORM_IMAGE"] = terraform
    built_stack.build("builder")
    container_timings.measure("builder image build", started)
    checkout = copy_checkout(tmp_path / "checkout")

    started = time.monotonic()
    output = built_stack.engine.docker(
        "run",
        "--rm",
        "--init",
        "--network",
        "host",
        "--user",
        f"{OWNER[0]}:{OWNER[1]}",
        "--volume",
        f"{checkout}:/src",
        "--workdir",
        "/src",
        "tagloop-builder:local",
        "test:fast",
        timeout=900,
    )
    container_timings.measure("./dev test:fast in the builder", started)
    assert " passed" in output and " failed" not in output

    foreign = [
        str(path.relative_to(checkout))
        for path in [checkout, *checkout.rglob("*")]
        if (path.lstat().st_uid, path.lstat().st_gid) != OWNER
    ]
    assert foreign == []
    assert (checkout / ".pytest_cache").is_dir()  # it did write into the checkout
