"""The Dockerfile, .dockerignore and the builder/image tasks.

No Docker engine runs here, so the images are checked statically: hadolint on
the real Dockerfile (and on a broken one, to prove it can fail), the stage
layout and runtime hardening, and the exact commands the Taskfile would run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from dataclasses import dataclass, field

import pytest
import yaml

from tests.fixtures.infra import CHART, COMPONENTS, FIXTURES, ROOT, run, tool

SERVICE_PORTS = {"learning": 8010, "inference": 8001, "ui": 8080}  # CONTRIBUTING defaults


@dataclass
class Stage:
    """One FROM ... AS name section: its base and its instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name; continuation lines joined, comments dropped."""
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            current = Stage(
                name=parts[-1] if "AS" in (p.upper() for p in parts) else parts[0], base=parts[0]
            )
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, " ".join(rest.split())))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def hadolint_codes(path) -> list[str]:
    result = run(tool("hadolint"), "--format", "json", path)
    return [finding["code"] for finding in json.loads(result.stdout or "[]")]


def test_hadolint_passes_the_dockerfile() -> None:
    assert hadolint_codes(ROOT / "Dockerfile") == []


def test_hadolint_rejects_a_broken_dockerfile() -> None:
    codes = hadolint_codes(FIXTURES / "Dockerfile.broken")
    assert {"DL3007", "DL3008", "DL3015", "DL3003", "DL3025"} <= set(codes)


def test_stages_builder_runtime_and_one_target_per_service(stages: dict[str, Stage]) -> None:
    assert {"wheels", "builder", "runtime", *COMPONENTS} <= set(stages)
    for component in COMPONENTS:
        # Service images build on the slim runtime, never on the builder.
        assert stages[component].base == "runtime"
    assert list(stages)[-3:] == list(COMPONENTS)


def test_every_image_installs_from_the_one_lock_file(stages: dict[str, Stage]) -> None:
    subsets = " ".join(stages["locks"].args("RUN"))
    # The runtime part of the lock, derived from it at build time, hashes included.
    assert "lock_subset.py /build/requirements.lock --project /build/pyproject.toml" in subsets
    download = " ".join(stages["wheels"].args("RUN"))
    assert "--require-hashes --ignore-requires-python -r /locks/runtime.lock" in download
    builder = " ".join(stages["builder"].args("RUN"))
    assert (
        "--require-hashes --no-deps --ignore-requires-python -r /tmp/requirements.lock" in builder
    )
    assert "./dev --version" in builder  # the builder's venv is made by ./dev itself
    runtime = " ".join(stages["runtime"].args("RUN"))
    # Offline from the hash-checked wheels: exactly the locked runtime versions, nothing else.
    assert "--no-index --find-links /wheels --require-hashes --no-deps" in runtime
    assert "-r /locks/runtime.lock" in runtime
    assert "--no-index --no-deps /project/tagloop-*.whl" in runtime


def test_base_images_are_build_arguments_defaulting_to_the_official_images() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert "ARG TERRAFORM_IMAGE=hashicorp/terraform:" in text
    # No frontend image to pull: the engine's built-in Dockerfile frontend builds it.
    assert not text.lstrip().lower().startswith("# syntax=")


def test_runtime_is_non_root_with_healthcheck_and_oci_labels(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    user = runtime.args("USER")[-1]
    assert user.split(":")[0] not in {"0", "root"}
    assert "/healthz" in runtime.args("HEALTHCHECK")[0]
    labels = " ".join(runtime.args("LABEL"))
    for key in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{key}=$" in labels
    env = " ".join(runtime.args("ENV"))
    for setting in ("TAGLOOP_HOST=0.0.0.0", "TAGLOOP_LOG_FORMAT=json", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in env
    # The learner's corpus and test set are baked in, as the services expect.
    copied = " ".join(runtime.args("COPY"))
    for name in ("train.tsv", "test.tsv", "unlabeled.tsv"):
        assert f"data/{name}" in copied and (ROOT / "data" / name).exists()


def test_each_target_runs_its_service_on_the_port_the_chart_uses(stages: dict[str, Stage]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in COMPONENTS:
        stage = stages[component]
        assert json.loads(stage.args("CMD")[-1]) == ["tagloop", "serve", component]
        port = SERVICE_PORTS[component]
        assert stage.args("EXPOSE") == [str(port)]
        assert f"TAGLOOP_PORT={port}" in stage.args("ENV")
        assert values[component]["port"] == port


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here (last match wins)."""
    verdict = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in patterns:
        negate = line.startswith("!")
        pattern = line.lstrip("!")
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/"))
            for p in prefixes
        ):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_local_state_out_and_the_data_in() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (
        ".venv/bin/python",
        "var/learner/feedback.csv",
        ".git/HEAD",
        "tagloop/__pycache__/x.pyc",
        "terraform/.terraform/providers",
        "data/feedback.tsv",
    ):
        assert ignored(path, patterns), path
    for path in (
        "requirements.lock",
        "pyproject.toml",
        "dev",
        "Taskfile.yml",
        "tagloop/cli.py",
        "data/train.tsv",
        "data/test.tsv",
        "data/unlabeled.tsv",
    ):
        assert not ignored(path, patterns), path


def dry_run(*args: str, **env: str) -> tuple[int, list[str]]:
    """The commands a task would run (task --dry), as argument lists."""
    result = run(tool("task"), "--dry", *args, env={**os.environ, **env})
    commands = [
        line.split("] ", 1)[1] for line in result.stderr.splitlines() if line.startswith("task: [")
    ]
    return result.returncode, commands


def test_builder_task_runs_a_task_in_the_builder_stage_as_the_host_user() -> None:
    code, commands = dry_run("builder", "--", "test")
    assert code == 0
    build, docker_run = commands
    assert build.startswith("docker build --target builder ")
    argv = shlex.split(docker_run)
    assert argv[:2] == ["docker", "run"]
    assert "--network" in argv and argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("--user") + 1] == "$(id -u):$(id -g)"
    assert argv[argv.index("--volume") + 1] == f"{ROOT}:/src"
    assert argv[-2:] == ["tagloop-builder:local", "test"]


def test_builder_shell_is_interactive_bash() -> None:
    code, commands = dry_run("builder:shell")
    assert code == 0
    assert "--tty --entrypoint bash" in commands[-1]


def test_images_task_builds_the_three_targets_with_labels() -> None:
    code, commands = dry_run("images", "VERSION=1.2.3", "REGISTRY=ghcr.io/acme")
    assert code == 0
    assert len(commands) == len(COMPONENTS)
    for component, command in zip(COMPONENTS, commands, strict=True):
        assert f"--target {component} " in command
        assert "--build-arg VERSION=1.2.3" in command and "--build-arg REVISION=" in command
        assert f"--tag ghcr.io/acme/tagloop-{component}:1.2.3" in command
