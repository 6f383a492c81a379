"""Pub/Sub failures classified (permanent or transient), reported once, and the stack's
`--pubsub official` choice: in-process, no servers."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from prometheus_client import CollectorRegistry, Counter

from learning_service.retry import RECHECK_DELAY, Blocked, Stopped, failed, retry
from tagloop.channels.bus import PublishError
from tagloop.channels.provisioning import PubSubFailure, guarded, is_permanent
from tagloop_dev.stack.config import Ports, Stack, StackError

SUBSCRIPTION = "projects/p/subscriptions/learner"


def counter() -> Counter:
    return Counter("retries", "test", ["operation"], registry=CollectorRegistry())


def failure(error: Exception, call: str = "get subscription") -> PubSubFailure:
    def fail() -> None:
        raise error

    with pytest.raises(PubSubFailure) as raised:
        guarded(call, SUBSCRIPTION, fail)
    return raised.value


@pytest.mark.parametrize(
    ("error", "permanent", "starts"),
    [
        (gexc.PermissionDenied("User not authorized"), True, "permission denied"),
        (gexc.NotFound("Resource not found"), True, "not found"),
        (gexc.InvalidArgument("bad name"), True, "invalid"),
        (ValueError("attached to another topic"), True, "invalid"),
        (gexc.ServiceUnavailable("connection refused"), False, "get subscription on"),
        (gexc.DeadlineExceeded("slow"), False, "get subscription on"),
        (OSError("socket"), False, "get subscription on"),
    ],
)
def test_failures_say_call_resource_and_whether_retrying_helps(
    error: Exception, permanent: bool, starts: str
) -> None:
    found = failure(error)
    assert found.permanent is permanent and is_permanent(found) is permanent
    assert str(found).startswith(starts)
    assert SUBSCRIPTION in str(found)


def test_a_permission_failure_names_the_permission() -> None:
    found = failure(gexc.PermissionDenied("denied"), call="create topic")
    assert "needs pubsub.topics.create" in str(found)


def test_a_publish_error_is_classified_by_its_cause() -> None:
    try:
        raise PublishError("publishing failed") from gexc.NotFound("no topic")
    except PublishError as error:
        assert is_permanent(error)
    assert not is_permanent(PublishError("timed out"))
    assert not is_permanent(ValueError("a registry's bundle error is not Pub/Sub's"))


def test_a_permanent_error_is_logged_once_and_rechecked_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocked, retries = Blocked(), counter()
    problem = failure(gexc.PermissionDenied("denied"))
    with caplog.at_level(logging.INFO, logger="learning_service.retry"):
        waits = [failed("pubsub.ensure", problem, blocked, retries, 0.5) for _ in range(3)]
    assert waits == [RECHECK_DELAY] * 3
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert blocked.reasons() == {"pubsub.ensure": str(problem)}

    transient = failure(gexc.ServiceUnavailable("down"))
    assert failed("pubsub.ensure", transient, blocked, retries, 0.5) == 0.5
    assert blocked.reasons() == {}  # the permanent cause is gone


def test_retry_clears_the_reason_once_the_action_succeeds() -> None:
    blocked, stop = Blocked(), threading.Event()
    blocked.set("pubsub.ensure", "missing")
    assert retry("pubsub.ensure", lambda: 7, stop, counter(), blocked) == 7
    assert blocked.reasons() == {}
    stop.set()
    with pytest.raises(Stopped):
        retry("pubsub.ensure", lambda: 7, stop, counter(), blocked)


def test_up_with_the_official_emulator_runs_the_sdk_script(tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    script = sdk / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    stack = Stack(tmp_path / "var", tmp_path, Ports.from_base(25000), pubsub="official")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOUDSDK_ROOT_DIR", str(sdk))
        (pubsub, *_) = stack.programs()
    assert pubsub.command == (
        str(script),
        "--host=127.0.0.1",
        "--port=25085",
        f"--dir={tmp_path / 'var' / 'pubsub-official'}",
    )


def test_up_with_the_official_emulator_but_no_sdk_says_what_to_install(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "var", tmp_path, Ports.from_base(25000), pubsub="official")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOUDSDK_ROOT_DIR", str(tmp_path / "no-sdk"))
        with pytest.raises(StackError, match=r"--pubsub official: .*pubsub-emulator"):
            stack.programs()
