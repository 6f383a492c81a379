"""`tagloop models` against a real learner, registry and emulator: list, show, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path

from tagloop_dev.s3server import S3Server
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import LearnerStack, store_copy, tagloop_models


def test_list_promote_rollback_through_the_learner(
    learner_stack: LearnerStack, s3_server: S3Server, tmp_path: Path
) -> None:
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    # The learner lists only versions it signed: write as the learner would.
    registry = s3_server.registry(learner_stack.registry.bucket, signer=model_signer())
    bootstrap = learner.get("/api/status")["current_version"]
    # A second stored version, not promoted: the same bundle under a new id.
    held_back = {"promoted": False, "reason": "held back for the test"}
    second = store_copy(registry, bootstrap, tmp_path, held_back)

    listed = tagloop_models(learner.url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["current_version"] == bootstrap
    assert [m["version"] for m in body["models"]] == [second, bootstrap]
    table = tagloop_models(learner.url, "list").stdout.splitlines()
    assert table[1].startswith(f"  {second}") and "rejected: held back" in table[1]
    assert table[2].startswith(f"* {bootstrap}")

    shown = tagloop_models(learner.url, "show", second)
    assert json.loads(shown.stdout)["decision"]["reason"] == "held back for the test"

    refused = tagloop_models(learner.url, "promote", second, token=None)
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr
    assert registry.current_version() == bootstrap

    promoted = tagloop_models(learner.url, "promote", second)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["current_version"] == second
    assert registry.current_version() == second

    rolled = tagloop_models(learner.url, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["current_version"] == bootstrap
    assert registry.current_version() == bootstrap
    assert learner.get("/api/status")["current_version"] == bootstrap

    nothing = tagloop_models(learner.url, "rollback")
    assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr
    assert registry.current_version() == bootstrap

    missing = tagloop_models(learner.url, "show", "20000101T000000000Z-000000")
    assert missing.returncode == 2 and "no model version" in missing.stderr
    assert learner.stop() == 0
