"""The S3 model registry against a real SeaweedFS, through boto3 (contracts §4)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop.channels.registry import (
    CURRENT_KEY,
    CorruptObject,
    IntegrityError,
    InvalidVersion,
    NotPromoted,
    Registry,
    RegistryError,
    Untrusted,
    VersionNotFound,
    new_version,
)
from tagloop.domain.signing import TrustedKeys
from tagloop.settings import CommonSettings, ConfigError
from tagloop_dev.s3server import S3Server
from tests.fixtures.keys import model_signer
from tests.fixtures.s3 import unique_bucket
from tests.fixtures.wait import wait_until

PROMOTED = {"promoted": True, "reason": "f1_macro improved"}
REJECTED = {"promoted": False, "reason": "f1_macro dropped by 0.05"}


def make_bundle(root: Path, payload: bytes) -> Path:
    """A bundle directory; the registry treats the artifact as opaque bytes."""
    bundle = root / f"bundle-{len(list(root.iterdir()))}"
    bundle.mkdir()
    (bundle / "model.npz").write_bytes(payload)
    return bundle


def put(registry: Registry, tmp_path: Path, payload: bytes, decision: dict) -> str:
    version = new_version()
    registry.put_version(
        version, make_bundle(tmp_path, payload), {"decision": decision, "training_rows": 3}
    )
    return version


def test_new_version_is_sortable_and_unique() -> None:
    versions = [new_version() for _ in range(2000)]
    assert all(re.fullmatch(r"\d{8}T\d{9}Z-[0-9a-f]{6}", v) for v in versions)
    assert len(set(versions)) == len(versions)
    stamps = [v.split("-")[0] for v in versions]
    assert stamps == sorted(stamps)


def test_put_get_list_and_current(registry: Registry, tmp_path: Path) -> None:
    assert registry.current_version() is None
    assert registry.list_versions() == []
    first = put(registry, tmp_path, b"first model", PROMOTED)
    second = new_version()
    uri = registry.put_version(
        second,
        make_bundle(tmp_path, b"second model"),
        {"decision": REJECTED, "parent_version": first},
    )
    assert uri == f"s3://{registry.bucket}/models/{second}/model.npz"

    metadata = registry.get_metadata(second)
    assert metadata["version"] == second
    assert metadata["artifact"] == "model.npz"
    assert metadata["parent_version"] == first
    assert metadata["decision"] == REJECTED
    assert len(metadata["sha256"]) == 64
    assert metadata["created_at"].endswith("Z")
    assert [m["version"] for m in registry.list_versions()] == [first, second]
    assert registry.current_version() is None  # putting a version never moves the pointer

    registry.set_current(first)
    assert registry.current_version() == first
    current = registry.client.get_object(Bucket=registry.bucket, Key="models/current.json")
    pointer = json.loads(current["Body"].read())
    assert (
        pointer["version"] == first and pointer["sha256"] == registry.get_metadata(first)["sha256"]
    )
    assert "signature" not in pointer  # this registry has no signer


def test_fetch_verifies_and_writes_the_bundle(registry: Registry, tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)  # spans several download chunks
    version = put(registry, tmp_path, payload, PROMOTED)
    dest = registry.fetch(version, tmp_path / "cache" / version)
    assert (dest / "model.npz").read_bytes() == payload
    assert json.loads((dest / "metadata.json").read_text()) == registry.get_metadata(version)
    assert sorted(p.name for p in dest.iterdir()) == ["metadata.json", "model.npz"]


def test_corrupted_artifact_is_refused_and_nothing_is_left(
    registry: Registry, tmp_path: Path
) -> None:
    version = put(registry, tmp_path, b"the real model", PROMOTED)
    registry.client.put_object(
        Bucket=registry.bucket, Key=f"models/{version}/model.npz", Body=b"tampered model"
    )
    dest = tmp_path / "cache" / version
    with pytest.raises(IntegrityError, match="sha256"):
        registry.fetch(version, dest)
    assert list(dest.iterdir()) == []


def test_promote_rolls_back_and_forward(registry: Registry, tmp_path: Path) -> None:
    old = put(registry, tmp_path, b"old", PROMOTED)
    new = put(registry, tmp_path, b"new", PROMOTED)
    registry.set_current(new)

    assert registry.promote(old)["decision"] == PROMOTED  # a past decision is kept
    assert registry.current_version() == old
    registry.promote(new)
    assert registry.current_version() == new

    rejected = put(registry, tmp_path, b"rejected", REJECTED)
    with pytest.raises(NotPromoted, match="not promoted"):
        registry.set_current(rejected)
    assert registry.current_version() == new
    registry.promote(rejected)
    assert registry.current_version() == rejected
    assert registry.get_metadata(rejected)["decision"] == {
        "promoted": True,
        "reason": "manual promotion",
    }


def test_unknown_versions_are_refused(registry: Registry, tmp_path: Path) -> None:
    missing = new_version()
    for action in (registry.set_current, registry.promote, registry.get_metadata):
        with pytest.raises(VersionNotFound, match=missing):
            action(missing)
    with pytest.raises(VersionNotFound):
        registry.fetch(missing, tmp_path / "dest")
    for bad in ("../escape", "a/b", "", "-leading-dash", "x" * 101, f"{missing}/../x"):
        with pytest.raises(InvalidVersion):
            registry.get_metadata(bad)


def test_put_version_validates_its_input(registry: Registry, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, b"model")
    version = new_version()
    with pytest.raises(IntegrityError, match="does not match"):
        registry.put_version(version, bundle, {"sha256": "0" * 64})
    with pytest.raises(RegistryError, match="names version"):
        registry.put_version(version, bundle, {"version": "other"})
    with pytest.raises(RegistryError, match="decision"):
        registry.put_version(version, bundle, {"decision": {"promoted": "yes"}})
    with pytest.raises(RegistryError, match="no artifact"):
        registry.put_version(version, tmp_path / "empty", {})
    with pytest.raises(RegistryError, match="not plain JSON"):
        registry.put_version(version, bundle, {"metrics": {"f1_macro": float("nan")}})
    listing = registry.client.list_objects_v2(Bucket=registry.bucket)
    assert listing.get("Contents", []) == []  # a refused put uploads nothing

    registry.put_version(version, bundle, {})
    with pytest.raises(RegistryError, match="immutable"):
        registry.put_version(version, bundle, {})
    with pytest.raises(NotPromoted):  # no decision recorded means not promoted
        registry.set_current(version)


def test_unreadable_metadata_and_pointer(registry: Registry, tmp_path: Path) -> None:
    good = put(registry, tmp_path, b"good", PROMOTED)
    broken = new_version()
    registry.client.put_object(
        Bucket=registry.bucket, Key=f"models/{broken}/metadata.json", Body=b"{not json"
    )
    assert [m["version"] for m in registry.list_versions()] == [good]
    with pytest.raises(CorruptObject, match="not valid JSON"):
        registry.get_metadata(broken)
    registry.client.put_object(Bucket=registry.bucket, Key="models/current.json", Body=b"[]")
    with pytest.raises(CorruptObject, match=r"current\.json"):
        registry.current_version()


# The real put_version in a child process, instrumented only through botocore's
# public event hooks: once the artifact's PUT has been answered, the child says
# so and blocks, and the test SIGKILLs it there, between artifact and metadata.
WRITER = """
import sys, threading
from pathlib import Path
from tagloop.channels.registry import Registry

bucket, endpoint, version, bundle, marker = sys.argv[1:]
registry = Registry(bucket, endpoint_url=endpoint)

def pause_after_artifact(http_response, **kwargs):
    if http_response.url.endswith("/model.npz"):
        Path(marker).write_text("artifact uploaded")
        threading.Event().wait()

registry.client.meta.events.register("after-call.s3.PutObject", pause_after_artifact)
registry.put_version(version, bundle, {"decision": {"promoted": True, "reason": "better"}})
registry.set_current(version)
"""


def test_current_never_points_at_a_version_whose_writer_died(
    registry: Registry, tmp_path: Path
) -> None:
    previous = put(registry, tmp_path, b"previous model", PROMOTED)
    registry.set_current(previous)
    version, marker = new_version(), tmp_path / "marker"
    writer = subprocess.Popen(
        [
            *(sys.executable, "-c", WRITER, registry.bucket, str(registry.endpoint_url)),
            *(version, str(make_bundle(tmp_path, b"next model")), str(marker)),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: marker.exists() or writer.poll() is not None, timeout=30, what="the writer"
        )
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert writer.stderr is not None
        writer.stderr.close()

    artifact = registry.client.head_object(
        Bucket=registry.bucket, Key=f"models/{version}/model.npz"
    )
    assert artifact["ContentLength"] == len(b"next model")  # killed inside the window
    assert registry.current_version() == previous
    assert [m["version"] for m in registry.list_versions()] == [previous]
    with pytest.raises(VersionNotFound, match="incomplete"):
        registry.set_current(version)
    with pytest.raises(VersionNotFound):
        registry.promote(version)
    with pytest.raises(VersionNotFound):
        registry.fetch(version, tmp_path / "dest")
    assert registry.current_version() == previous


def test_missing_bucket_is_a_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    registry = s3_server.registry(unique_bucket("absent"))
    for action in (registry.current_version, registry.list_versions):
        with pytest.raises(RegistryError, match=r"bucket 'absent-\w+' does not exist"):
            action()
    with pytest.raises(RegistryError, match="does not exist"):
        registry.put_version(new_version(), make_bundle(tmp_path, b"m"), {})


@pytest.mark.parametrize(
    ("access_key", "code"),
    [("tagloop", "SignatureDoesNotMatch"), ("nobody", "InvalidAccessKeyId")],
)
def test_bad_credentials_are_a_clear_error(registry: Registry, access_key: str, code: str) -> None:
    wrong = Registry(
        registry.bucket,
        endpoint_url=registry.endpoint_url,
        access_key=access_key,
        secret_key="wrong-secret",
    )
    with pytest.raises(RegistryError, match=f"refused the credentials \\({code}") as error:
        wrong.current_version()
    assert "AWS_SECRET_ACCESS_KEY" in str(error.value)


def test_unreachable_endpoint_fails_fast(s3_server: S3Server) -> None:
    dead = Registry(
        "tagloop-models", endpoint_url="http://127.0.0.1:9", connect_timeout=0.5, max_attempts=2
    )
    with pytest.raises(RegistryError, match="cannot reach"):
        dead.current_version()


def test_from_settings_uses_the_environment(s3_server: S3Server, registry: Registry) -> None:
    env = {**s3_server.env(), "TAGLOOP_S3_BUCKET": registry.bucket}
    from_env = Registry.from_settings(CommonSettings.from_env(env), env)
    assert from_env.bucket == registry.bucket
    assert from_env.current_version() is None
    assert from_env.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    with pytest.raises(ConfigError, match="AWS_RETRY_MODE"):
        Registry.from_settings(CommonSettings.from_env(env), {**env, "AWS_RETRY_MODE": "eager"})


def test_ensure_bucket_is_idempotent(s3_server: S3Server) -> None:
    registry = s3_server.registry(unique_bucket("ensure"))
    registry.ensure_bucket()
    registry.ensure_bucket()
    registry.client.head_bucket(Bucket=registry.bucket)
    registry.client.delete_bucket(Bucket=registry.bucket)


def signed_pair(s3_server: S3Server, registry: Registry) -> tuple[Registry, Registry]:
    """The learner's view (signs, verifies with its own key) and a replica's (verifies only)."""
    learner = s3_server.registry(registry.bucket, signer=model_signer())
    replica = s3_server.registry(registry.bucket, trusted=TrustedKeys.of([model_signer().public]))
    return learner, replica


def test_a_signing_registry_signs_metadata_and_pointer(
    s3_server: S3Server, registry: Registry, tmp_path: Path
) -> None:
    learner, replica = signed_pair(s3_server, registry)
    version = put(learner, tmp_path, b"signed model", PROMOTED)
    learner.set_current(version)
    metadata = replica.get_metadata(version)
    assert metadata["signature"]["key_id"] == model_signer().key_id
    pointer = replica.current_pointer()
    assert pointer is not None and pointer.version == version
    assert pointer.sha256 == metadata["sha256"] and pointer.issued_at
    assert (replica.fetch(version, tmp_path / "cache" / version) / "model.npz").read_bytes() == (
        b"signed model"
    )

    rejected = put(learner, tmp_path, b"rejected", REJECTED)
    learner.promote(rejected)  # the changed decision is signed again
    assert replica.get_metadata(rejected)["decision"] == {
        "promoted": True,
        "reason": "manual promotion",
    }
    assert replica.current_version() == rejected
    learner.promote(version)
    assert replica.current_version() == version


def test_a_verifying_registry_refuses_what_the_learner_did_not_sign(
    s3_server: S3Server, registry: Registry, tmp_path: Path
) -> None:
    learner, replica = signed_pair(s3_server, registry)
    unsigned = put(registry, tmp_path, b"unsigned", PROMOTED)
    good = put(learner, tmp_path, b"good", PROMOTED)
    with pytest.raises(Untrusted, match="unsigned"):
        replica.get_metadata(unsigned)
    with pytest.raises(Untrusted, match="unsigned"):
        replica.fetch(unsigned, tmp_path / "dest")
    assert not (tmp_path / "dest" / "model.npz").exists()
    assert [m["version"] for m in replica.list_versions()] == [good]

    # Genuine signed metadata copied under another version's key.
    copy = new_version()
    body = registry.client.get_object(Bucket=registry.bucket, Key=Registry.metadata_key(good))
    registry.client.put_object(
        Bucket=registry.bucket, Key=Registry.metadata_key(copy), Body=body["Body"].read()
    )
    with pytest.raises(Untrusted, match="wrong_version"):
        replica.get_metadata(copy)

    # A tampered artifact under genuine signed metadata.
    registry.client.put_object(
        Bucket=registry.bucket, Key=Registry.artifact_key(good), Body=b"tampered"
    )
    with pytest.raises(IntegrityError):
        replica.fetch(good, tmp_path / "dest2")

    registry.set_current(unsigned)
    with pytest.raises(Untrusted, match="unsigned"):
        replica.current_version()
    registry.client.put_object(
        Bucket=registry.bucket, Key=CURRENT_KEY, Body=json.dumps({"version": "../x"}).encode()
    )
    with pytest.raises(CorruptObject, match="invalid model version"):
        registry.current_version()
