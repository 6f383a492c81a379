"""Version ids, cache confinement and Ed25519 signatures (tagloop.domain.versions / .signing)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from tagloop.cli import main
from tagloop.domain.messages import InvalidMessage, ModelUpdate
from tagloop.domain.signing import (
    METADATA_PURPOSE,
    POINTER_PURPOSE,
    PUBLIC_KEYS_FILE_VAR,
    PUBLIC_KEYS_VAR,
    SIGNING_KEY_VAR,
    KeySettings,
    SignatureError,
    Signer,
    TrustedKeys,
    canonical_json,
    generate_key_files,
    public_key_path,
    public_key_text,
)
from tagloop.domain.versions import (
    VERSION_PATTERN,
    InvalidVersion,
    check_version,
    new_version,
    version_dir,
)
from tagloop.settings import ConfigError

SIGNER = Signer(Ed25519PrivateKey.generate())
TRUSTED = TrustedKeys.of([SIGNER.public])
METADATA = {
    "version": "20261122T051500123Z-1a2b3c",
    "sha256": "ab" * 32,
    "metrics": {"f1_macro": 0.52, "rows": 1000},
    "decision": {"promoted": True, "reason": "better"},
    "title": "ünïcödé \u2028 line",
}
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "bad",
    [
        "20261122T051500123Z-1a2b3c/../../learner",
        "../learner",
        "..",
        ".",
        "",
        "/etc",
        "20261122T051500123Z-1A2B3C",
        "20261122T051500123Z-1a2b3c\n",
        "20261122T051500123Z-1a2b3c\x00",
        " 20261122T051500123Z-1a2b3c",
        "v1",
        None,
        42,
    ],
)
def test_check_version_refuses_anything_but_a_version_id(bad: object) -> None:
    with pytest.raises(InvalidVersion):
        check_version(bad)


def test_new_versions_match_the_pattern() -> None:
    assert all(check_version(new_version()) for _ in range(200))


@given(st.text())
def test_a_version_dir_is_a_direct_child_of_the_cache_or_refused(text: str) -> None:
    root = Path("/tmp/tagloop-cache-root")
    try:
        path = version_dir(root, text)
    except InvalidVersion:
        assert not VERSION_PATTERN.fullmatch(text)
    else:
        assert path.parent == root.resolve() and path.name == text


def test_a_symlinked_cache_entry_is_refused(tmp_path: Path) -> None:
    version = new_version()
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache" / version).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidVersion, match="outside"):
        version_dir(tmp_path / "cache", version)


def test_model_update_messages_refuse_bad_versions() -> None:
    update = ModelUpdate(
        version="../../learner", artifact_uri="s3://b/k", sha256="0" * 64, created_at="2026-01-01Z"
    )
    payload = json.loads(update.to_message()[0])
    with pytest.raises(InvalidMessage) as error:
        ModelUpdate.from_dict(payload)
    assert error.value.reason == "invalid_version"


def test_a_signed_document_verifies_and_any_change_breaks_it() -> None:
    signed = SIGNER.sign(METADATA_PURPOSE, METADATA)
    assert TRUSTED.verify(METADATA_PURPOSE, signed) == signed
    assert TRUSTED.verify(METADATA_PURPOSE, json.loads(json.dumps(signed, indent=2))) is not None
    for name, value in [("sha256", "cd" * 32), ("version", new_version()), ("extra", 1)]:
        with pytest.raises(SignatureError) as error:
            TRUSTED.verify(METADATA_PURPOSE, {**signed, name: value})
        assert error.value.reason == "bad_signature"
    tampered = json.loads(json.dumps(signed))
    tampered["metrics"]["f1_macro"] = 1.0
    with pytest.raises(SignatureError, match="bad_signature"):
        TRUSTED.verify(METADATA_PURPOSE, tampered)


def test_a_signature_is_bound_to_its_purpose() -> None:
    signed = SIGNER.sign(METADATA_PURPOSE, {"version": METADATA["version"], "sha256": "ab" * 32})
    with pytest.raises(SignatureError, match="bad_signature"):
        TRUSTED.verify(POINTER_PURPOSE, signed)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (METADATA, "unsigned"),
        ([1, 2], "malformed"),
        ({**METADATA, "signature": "x"}, "malformed"),
        ({**METADATA, "signature": {"alg": "rsa", "key_id": "k", "value": "v"}}, "malformed"),
        ({**METADATA, "signature": {"alg": "ed25519", "key_id": "k", "value": "v"}}, "unknown_key"),
        (
            {**METADATA, "signature": {"alg": "ed25519", "key_id": SIGNER.key_id, "value": "!!"}},
            "bad_signature",
        ),
    ],
)
def test_unverifiable_documents_are_refused_by_reason(document: object, reason: str) -> None:
    with pytest.raises(SignatureError) as error:
        TRUSTED.verify(METADATA_PURPOSE, document)
    assert error.value.reason == reason


def test_another_key_is_not_trusted_even_under_the_right_key_id() -> None:
    other = Signer(Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match="unknown_key"):
        TRUSTED.verify(METADATA_PURPOSE, other.sign(METADATA_PURPOSE, METADATA))
    claimed = other.sign(METADATA_PURPOSE, METADATA)
    claimed["signature"]["key_id"] = SIGNER.key_id
    with pytest.raises(SignatureError, match="bad_signature"):
        TRUSTED.verify(METADATA_PURPOSE, claimed)
    both = TRUSTED + TrustedKeys.of([other.public])  # a rotation: old and new side by side
    assert both.verify(METADATA_PURPOSE, other.sign(METADATA_PURPOSE, METADATA))


@given(JSON)
def test_canonical_json_survives_a_round_trip(value: object) -> None:
    assert canonical_json(json.loads(json.dumps(value))) == canonical_json(value)


def test_key_files_and_settings(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "model-signing.key"
    public = generate_key_files(private)
    assert public == public_key_path(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        generate_key_files(private)
    signer = KeySettings.from_env({SIGNING_KEY_VAR: str(private)}).signer()
    assert signer is not None
    trusted = KeySettings.from_env({PUBLIC_KEYS_FILE_VAR: str(public)}).trusted()
    assert trusted is not None and set(trusted.keys) == {signer.key_id}
    pem = signer.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    other = Signer(Ed25519PrivateKey.generate())
    (tmp_path / "keys.txt").write_text(f"# old key\n{pem}\n{public_key_text(other.public)}\n")
    both = KeySettings.from_env({PUBLIC_KEYS_FILE_VAR: str(tmp_path / "keys.txt")}).trusted()
    assert both is not None and set(both.keys) == {signer.key_id, other.key_id}
    inline = KeySettings.from_env({PUBLIC_KEYS_VAR: f"{public_key_text(other.public)}, "}).trusted()
    assert inline is not None and set(inline.keys) == {other.key_id}
    assert KeySettings.from_env({}).signer() is None and KeySettings.from_env({}).trusted() is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({SIGNING_KEY_VAR: "/nonexistent/key"}, "cannot read"),
        ({PUBLIC_KEYS_VAR: "not-a-key"}, "not a base64 Ed25519"),
        ({PUBLIC_KEYS_VAR: "# only a comment"}, "no public key"),
        ({PUBLIC_KEYS_FILE_VAR: "/nonexistent/keys"}, "cannot read"),
    ],
)
def test_bad_key_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        KeySettings.from_env(env).signer()
        KeySettings.from_env(env).trusted()
    assert next(iter(env)) in str(error.value)


def test_a_non_ed25519_private_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        Signer.from_file(path)


def test_cli_keygen_writes_a_pair_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    assert main(["keygen", str(key)]) == 0
    assert (
        Signer.from_file(key).key_id
        in TrustedKeys.parse(public_key_path(key).read_text(), "test").keys
    )
    before = key.read_bytes()
    assert main(["keygen", str(key)]) == 2
    assert key.read_bytes() == before
    assert os.access(key, os.R_OK)


@pytest.mark.parametrize("action", ["promote", "show"])
def test_cli_checks_version_ids_before_calling_the_learner(
    action: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGLOOP_LEARNER_URL", "http://127.0.0.1:9")  # nothing listens
    assert main(["models", action, "../../api/retrain"]) == 2
    assert "invalid model version" in capsys.readouterr().err
