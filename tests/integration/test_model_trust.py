"""Trust boundaries for models (issue 11, reproductions 3 and 4): a real replica (gunicorn) on the
real emulator and SeaweedFS refuses forged broadcasts, forged pointers and tampered bundles,
touches nothing outside its cache, counts every refusal and keeps serving the signed model."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagloop.channels.registry import CURRENT_KEY, Registry
from tagloop.domain.messages import MODEL_UPDATE_SCHEMA
from tagloop.domain.signing import (
    POINTER_PURPOSE,
    PUBLIC_KEYS_VAR,
    SIGNING_KEY_VAR,
    Signer,
    TrustedKeys,
)
from tagloop.domain.versions import VERSION_PATTERN, new_version
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import (
    REFUSALS,
    InferenceSetup,
    Replica,
    inference_setup,
    replica_env,
    start_replica,
)
from tests.fixtures.keys import model_signer
from tests.fixtures.learning import LearnerStack
from tests.fixtures.pubsub import unique_project
from tests.fixtures.s3 import unique_bucket
from tests.fixtures.wait import wait_until

UPDATES = "tagloop_inference_model_updates_received_total"


@pytest.fixture(scope="module")
def trust(
    s3_server: S3Server,
    pubsub_emulator: str,
    model_bundle: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InferenceSetup]:
    """One worker that reconciles twice a second, with its cache inside a directory whose
    siblings stand for everything else on the machine (the learner's data, say)."""
    root = tmp_path_factory.mktemp("trust")
    with inference_setup(
        s3_server,
        pubsub_emulator,
        model_bundle,
        root / "replica" / "cache",
        TAGLOOP_WORKERS="1",
        TAGLOOP_RECONCILE_SECONDS="0.5",
    ) as setup:
        yield setup


@pytest.fixture
def outside(trust: InferenceSetup, model_bundle: Path) -> Iterator[Path]:
    """Files beside the cache that a replica must never touch: a 'learner' data directory and,
    next to it, a valid bundle an attacker planted."""
    root = trust.cache_dir.parent.parent
    learner = root / "learner"
    learner.mkdir(exist_ok=True)
    (learner / "feedback.csv").write_text("feedback_id,title,tags\nf1,How do I x,python\n")
    shutil.copytree(model_bundle, root / "planted", dirs_exist_ok=True)
    yield root
    shutil.rmtree(learner)
    shutil.rmtree(root / "planted")


def snapshot(root: Path, cache: Path) -> dict[str, str]:
    """Every file under `root` except the cache, with its sha256: what must not change."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and cache not in path.parents
    }


def updates_seen(replica: Replica, *outcomes: str) -> float:
    """Broadcasts the worker handled (with one of `outcomes`, if given)."""
    return sum(
        value
        for (name, labels), value in replica.metrics().items()
        if name == UPDATES and (not outcomes or dict(labels)["outcome"] in outcomes)
    )


def refusals(replica: Replica) -> float:
    return sum(value for (name, _), value in replica.metrics().items() if name == REFUSALS)


def send_raw(setup: InferenceSetup, payload: dict) -> None:
    """A model-update message as anyone with publish rights on the topic can send it."""
    bus = setup.publisher.bus
    path = bus.ensure_topic(setup.model_topic)
    data = json.dumps(payload).encode()
    bus.publisher.publish(path, data, schema=MODEL_UPDATE_SCHEMA).result(timeout=10)


def forged_update(setup: InferenceSetup, version: str, sha256: str, **extra: object) -> dict:
    return {
        "version": version,
        "artifact_uri": f"s3://{setup.publisher.registry.bucket}/models/{version}/model.npz",
        "sha256": sha256,
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {"f1_macro": 1.0},
        **extra,
    }


def handled(setup: InferenceSetup, payload: dict) -> None:
    """Send one forged broadcast and wait until the worker has dealt with it."""
    before = updates_seen(setup.replica)
    send_raw(setup, payload)
    wait_until(lambda: updates_seen(setup.replica) > before, timeout=10, what="the update handled")


def test_traversal_versions_touch_nothing_outside_the_cache(
    trust: InferenceSetup, outside: Path
) -> None:
    """Reproduction 3: `<current>/../../../learner` renamed and deleted the learner's data; with
    a bundle at such a path and its sha256 in the message, the bundle was served."""
    replica, serving = trust.replica, trust.replica.served_version()
    assert serving is not None
    before = snapshot(outside, trust.cache_dir)
    planted_sha = hashlib.sha256((outside / "planted" / "model.npz").read_bytes()).hexdigest()
    invalid = replica.metric(REFUSALS, reason="invalid_version")
    odd = [
        f"{serving}/../../../learner",
        f"{serving}/../../learner",
        f"{serving}/../../../planted",
        "../planted",
        "..",
        ".",
        str(outside / "learner"),
        f"{serving}\x00",
        f"{serving}/",
        " " + serving,
    ]
    for version in odd:
        handled(trust, forged_update(trust, version, planted_sha))
    assert snapshot(outside, trust.cache_dir) == before
    assert replica.served_version() == serving and replica.all_workers_serve(serving)
    assert replica.metric(REFUSALS, reason="invalid_version") == invalid + len(odd)
    assert not (outside / "replica" / "planted").exists()


def test_a_non_promoted_version_is_not_served_after_a_forged_broadcast(
    trust: InferenceSetup,
) -> None:
    """Reproduction 4: one broadcast naming a stored but rejected version made replicas serve it."""
    replica, publisher = trust.replica, trust.publisher
    serving = replica.served_version()
    rejected = publisher.publish(promote=False, broadcast=False)
    not_current = replica.metric(REFUSALS, reason="not_current")
    publisher.broadcast(rejected)
    replica.wait_refused("not_current", not_current, "the broadcast refused")
    assert replica.served_version() == serving
    assert not (trust.cache_dir / rejected).exists()


def forged_pointers(registry: Registry, serving: str) -> Iterator[tuple[str, dict]]:
    """(expected refusal reason, current.json body) for the forgeries that need no luck."""
    sha = registry.get_metadata(serving)["sha256"]
    body = {"version": serving, "sha256": sha, "issued_at": "2099-01-01T00:00:00.000Z"}
    yield "unsigned", {"version": serving}
    yield "unsigned", body
    attacker = Signer(Ed25519PrivateKey.generate())
    yield "unknown_key", attacker.sign(POINTER_PURPOSE, body)
    claimed = attacker.sign(POINTER_PURPOSE, body)
    claimed["signature"]["key_id"] = model_signer().key_id
    yield "bad_signature", claimed
    genuine = model_signer().sign(POINTER_PURPOSE, body)
    yield "bad_signature", {**genuine, "sha256": "0" * 64}  # a signed pointer, edited
    metadata = registry.get_metadata(serving)  # a real signature, but on the metadata
    yield "bad_signature", {**body, "signature": metadata["signature"]}
    yield "malformed", {**body, "signature": "yes"}


def put_pointer(registry: Registry, body: object) -> None:
    registry.client.put_object(
        Bucket=registry.bucket, Key=CURRENT_KEY, Body=json.dumps(body).encode()
    )


def test_forged_pointers_are_refused_by_reason_and_change_nothing(
    trust: InferenceSetup, outside: Path
) -> None:
    replica, registry = trust.replica, trust.publisher.registry
    serving = replica.served_version()
    assert serving is not None
    before = snapshot(outside, trust.cache_dir)
    try:
        for reason, body in forged_pointers(registry, serving):
            count = replica.metric(REFUSALS, reason=reason)
            put_pointer(registry, body)
            replica.wait_refused(reason, count, f"a {reason} pointer refused")
            assert replica.served_version() == serving
        # A forged pointer to a stored, signed, but rejected version, with f1_macro 1.0 claimed.
        rejected = trust.publisher.publish(promote=False, broadcast=False)
        count = replica.metric(REFUSALS, reason="unsigned")
        put_pointer(registry, {"version": rejected, "metrics": {"f1_macro": 1.0}})
        replica.wait_refused("unsigned", count)
        assert replica.served_version() == serving
        assert replica.get("/api/model").json()["version"] == serving
    finally:
        registry.set_current(serving)
    assert snapshot(outside, trust.cache_dir) == before
    assert "refused" in replica.output()


def test_tampered_metadata_in_the_bucket_is_refused(trust: InferenceSetup) -> None:
    """The signature covers every metadata field: better metrics or another digest break it."""
    replica, publisher = trust.replica, trust.publisher
    serving = replica.served_version()
    assert serving is not None
    version = publisher.publish(broadcast=False, promote=False)
    registry = publisher.registry
    metadata = registry.get_metadata(version)
    metadata["metrics"]["f1_macro"] = 1.0
    key = Registry.metadata_key(version)
    registry.client.put_object(Bucket=registry.bucket, Key=key, Body=json.dumps(metadata).encode())
    count = replica.metric(REFUSALS, reason="bad_signature")
    pointer = model_signer().sign(
        POINTER_PURPOSE,
        {"version": version, "sha256": metadata["sha256"], "issued_at": "2099-01-01T00:00:00.000Z"},
    )
    try:
        put_pointer(registry, pointer)  # even a genuinely signed pointer cannot vouch for it
        wait_until(lambda: replica.metric(REFUSALS, reason="bad_signature") > count, what="refused")
        assert replica.served_version() == serving
        assert not (trust.cache_dir / version).exists()
    finally:
        registry.set_current(serving)
    # The 2099 pointer was followed by nobody, so the real one (issued now) is not stale.
    good = publisher.publish()
    wait_until(lambda: replica.served_version() == good, what="the next good version")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    version=st.one_of(st.text(max_size=200), st.from_regex(VERSION_PATTERN, fullmatch=True)),
    sha256=st.one_of(st.text(max_size=80), st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
    signature=st.one_of(
        st.none(),
        st.text(max_size=100),
        st.fixed_dictionaries(
            {"alg": st.just("ed25519"), "key_id": st.text(max_size=20), "value": st.text()}
        ),
    ),
)
def test_any_forged_broadcast_is_refused_and_changes_nothing(
    trust: InferenceSetup, outside: Path, version: str, sha256: str, signature: object
) -> None:
    """Acceptance: any version string, any digest, any signature."""
    replica = trust.replica
    serving = replica.served_version()
    if version == serving:
        version = new_version()  # the one string that is not a forgery
    before = snapshot(outside, trust.cache_dir)
    loaded = updates_seen(replica, "load")
    refused = updates_seen(replica, "rejected", "not_current", "older")
    handled(trust, forged_update(trust, version, sha256, signature=signature))
    # Refused (malformed, or not what the signed pointer names), or ignored as an old delivery.
    assert updates_seen(replica, "rejected", "not_current", "older") == refused + 1
    assert updates_seen(replica, "load") == loaded
    assert replica.served_version() == serving
    assert snapshot(outside, trust.cache_dir) == before
    cached = {p.name for p in trust.cache_dir.iterdir() if not p.name.startswith(".")}
    assert cached <= {m["version"] for m in trust.publisher.registry.list_versions()}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.dictionaries(
        st.sampled_from(["version", "sha256", "issued_at", "signature", "metrics"]),
        st.one_of(
            st.text(max_size=80),
            st.from_regex(VERSION_PATTERN, fullmatch=True),
            st.fixed_dictionaries(
                {"alg": st.just("ed25519"), "key_id": st.text(max_size=20), "value": st.text()}
            ),
            st.floats(allow_nan=False),
        ),
    )
)
def test_any_forged_pointer_is_refused_and_changes_nothing(
    trust: InferenceSetup, outside: Path, body: dict
) -> None:
    replica, registry = trust.replica, trust.publisher.registry
    serving = replica.served_version()
    assert serving is not None
    before = snapshot(outside, trust.cache_dir)
    refused = refusals(replica)
    try:
        put_pointer(registry, body)
        wait_until(lambda: refusals(replica) > refused, what="the forged pointer refused")
        assert replica.served_version() == serving
    finally:
        registry.set_current(serving)
    assert snapshot(outside, trust.cache_dir) == before


def test_a_replica_without_a_public_key_is_not_ready_and_says_why(
    s3_server: S3Server, pubsub_emulator: str, tmp_path: Path
) -> None:
    env = replica_env(
        emulator_host=pubsub_emulator,
        project=unique_project("nokey"),
        s3=s3_server,
        bucket=unique_bucket("nokey"),
        cache_dir=tmp_path / "cache",
        TAGLOOP_WORKERS="1",
    )
    for name in (PUBLIC_KEYS_VAR, SIGNING_KEY_VAR):
        env.pop(name, None)
    with start_replica(env, wait_ready=False) as replica:
        answer = replica.get("/readyz")
        assert answer.status_code == 503
        assert "TAGLOOP_MODEL_PUBLIC_KEYS" in answer.json()["error"]["message"]
        assert "no model verification key" in replica.output()


def test_signatures_are_plain_base64(trust: InferenceSetup) -> None:
    """What operators see in the bucket: metadata and pointer carry an ed25519 signature."""
    registry = trust.publisher.registry
    raw = registry.client.get_object(Bucket=registry.bucket, Key=CURRENT_KEY)["Body"].read()
    pointer = json.loads(raw)
    assert set(pointer) == {"version", "sha256", "issued_at", "signature"}
    assert pointer["signature"]["alg"] == "ed25519"
    assert pointer["signature"]["key_id"] == model_signer().key_id
    assert len(base64.b64decode(pointer["signature"]["value"])) == 64


def test_a_forged_pointer_neither_freezes_the_gate_nor_changes_the_reported_model(
    learner_stack: LearnerStack, model_bundle: Path
) -> None:
    """Reproduction 4: a forged current.json with f1_macro 1.0 made the gate reject every real
    candidate (learning froze) while /api/status still named the old model."""
    learner = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    bootstrap = learner.get("/api/status")["current_version"]
    attacker = learner_stack.registry  # bucket access, no signing key
    forged = new_version()
    attacker.put_version(
        forged,
        model_bundle,
        {"decision": {"promoted": True, "reason": "trust me"}, "metrics": {"f1_macro": 1.0}},
    )
    attacker.set_current(forged)

    assert learner.post("/api/retrain").status_code == 202

    def decided() -> dict:
        status = learner.get("/api/status")
        last = status["last_decision"] or {}
        return status if last.get("version") not in (None, bootstrap) else {}

    status = wait_until(decided, timeout=60, what="the candidate's decision")
    candidate = status["last_decision"]
    assert candidate["promoted"] is True, candidate
    assert status["current_version"] == candidate["version"]
    assert learner.metric("tagloop_model_refusals_total", reason="unsigned") >= 1
    verified = Registry(
        attacker.bucket,
        endpoint_url=attacker.endpoint_url,
        trusted=TrustedKeys.of([model_signer().public]),
    )
    assert verified.current_version() == candidate["version"]
    assert verified.get_metadata(candidate["version"])["parent_version"] == bootstrap
    assert forged not in {m["version"] for m in learner.get("/api/models")["models"]}


def test_a_learner_restarted_on_a_forged_pointer_restores_a_signed_one(
    learner_stack: LearnerStack, model_bundle: Path
) -> None:
    first = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    bootstrap = first.get("/api/status")["current_version"]
    first.stop()
    put_pointer(learner_stack.registry, {"version": bootstrap})  # unsigned
    second = learner_stack.learner(TAGLOOP_REFIT_EVERY="100000").start()
    assert second.get("/api/status")["current_version"] == bootstrap
    raw = learner_stack.registry.client.get_object(
        Bucket=learner_stack.registry.bucket, Key=CURRENT_KEY
    )["Body"].read()
    assert json.loads(raw)["signature"]["key_id"] == model_signer().key_id
    assert second.metric("tagloop_model_refusals_total", reason="unsigned") == 1
