"""Ed25519 signatures on model metadata and on the current-model pointer.

The bucket and the model topic are reachable by more parties than the
learner, so neither a digest in the bucket nor one in a broadcast proves
where a model came from. The learner signs; everyone else verifies:

- a version's `metadata.json` carries a signature over its canonical JSON
  (every field but the signature: version, the artifact's sha256, metrics,
  decision, ...), so the artifact is authenticated through its signed digest;
- `models/current.json` carries a signature over {version, sha256, issued_at};
- `models/rollout.json` (a candidate's rollout stage) and each version's
  `rollout.json` (its stage history) are signed the same way.

What is signed is `purpose + "\\n" + canonical JSON`: the purpose keeps a
metadata signature from being replayed as a pointer and the other way round.
Canonical JSON is sorted keys, no spaces, ASCII only, no NaN: the same
bytes after any JSON round trip. A signature names its key by `key_id` (the
first 16 hex digits of the public key's sha256), so replicas can trust an
old and a new key side by side while the signing key rotates.

Keys: the private key is a PKCS#8 PEM file (what `tagloop keygen` and
`openssl genpkey -algorithm ed25519` write); a public key is one line of
base64 of its 32 raw bytes (what `tagloop keygen` writes to `<key>.pub`),
or a PEM SubjectPublicKeyInfo block.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tagloop.errors import TagloopError
from tagloop.settings import ConfigError, env_optional

ALGORITHM = "ed25519"
SIGNATURE_FIELD = "signature"
METADATA_PURPOSE = "tagloop.model-metadata.v1"
POINTER_PURPOSE = "tagloop.current-pointer.v1"
ROLLOUT_PURPOSE = "tagloop.rollout-record.v1"
SIGNING_KEY_VAR = "TAGLOOP_MODEL_SIGNING_KEY_FILE"
PUBLIC_KEYS_VAR = "TAGLOOP_MODEL_PUBLIC_KEYS"
PUBLIC_KEYS_FILE_VAR = "TAGLOOP_MODEL_PUBLIC_KEYS_FILE"

_PEM_PUBLIC = re.compile(
    r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.DOTALL | re.ASCII
)
_MAX_KEY_FILE_BYTES = 64 * 1024


class SignatureError(TagloopError):
    """A document that is not signed by a trusted key; `reason` is a bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def canonical_json(value: Any) -> bytes:
    """The bytes a signature covers: deterministic across JSON round trips."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _message(purpose: str, document: Mapping[str, Any]) -> bytes:
    unsigned = {name: value for name, value in document.items() if name != SIGNATURE_FIELD}
    return purpose.encode() + b"\n" + canonical_json(unsigned)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_text(public).encode()).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """One line: base64 of the 32 raw bytes (the format of `<key>.pub` and the env variable)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Signer:
    """The learner's private key; nothing else in the system holds one."""

    private: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"{SIGNING_KEY_VAR}: cannot read {path}: {error}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"{SIGNING_KEY_VAR}: {path} is not a PEM private key ({error})"
            ) from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{SIGNING_KEY_VAR}: {path} is not an Ed25519 key")
        return cls(private)

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, purpose: str, document: Mapping[str, Any]) -> dict[str, Any]:
        """`document` with a fresh signature field (any old one is replaced)."""
        value = self.private.sign(_message(purpose, document))
        unsigned = {name: item for name, item in document.items() if name != SIGNATURE_FIELD}
        return unsigned | {
            SIGNATURE_FIELD: {
                "alg": ALGORITHM,
                "key_id": self.key_id,
                "value": base64.b64encode(value).decode(),
            }
        }


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose signatures a reader accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, publics: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        return cls({key_id(public): public for public in publics})

    @classmethod
    def parse(cls, text: str, source: str) -> TrustedKeys:
        """Keys from text: PEM blocks, or base64 raw keys separated by commas or whitespace.

        Lines starting with '#' are comments. Empty text is an error: a reader
        that trusts no key would refuse every model.
        """
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        publics = [_pem_public(block, source) for block in _PEM_PUBLIC.findall(text)]
        rest = _PEM_PUBLIC.sub(" ", text)
        publics += [_raw_public(item, source) for item in re.split(r"[\s,]+", rest) if item]
        if not publics:
            raise ConfigError(f"{source}: no public key found")
        return cls.of(publics)

    def __add__(self, other: TrustedKeys) -> TrustedKeys:
        return TrustedKeys({**self.keys, **other.keys})

    def verify(self, purpose: str, document: Any) -> dict[str, Any]:
        """`document` if a trusted key signed it for `purpose`; SignatureError otherwise."""
        if not isinstance(document, dict):
            raise SignatureError("malformed", "expected a JSON object")
        signature = document.get(SIGNATURE_FIELD)
        if signature is None:
            raise SignatureError("unsigned", "no signature")
        if not (
            isinstance(signature, dict)
            and signature.get("alg") == ALGORITHM
            and isinstance(signature.get("key_id"), str)
            and isinstance(signature.get("value"), str)
        ):
            raise SignatureError(
                "malformed", f"signature must be {{alg: {ALGORITHM}, key_id, value}}"
            )
        public = self.keys.get(signature["key_id"])
        if public is None:
            shown = repr(signature["key_id"])[:40]
            raise SignatureError("unknown_key", f"signed by key {shown}, which is not trusted")
        try:
            value = base64.b64decode(signature["value"], validate=True)
            public.verify(value, _message(purpose, document))
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureError(
                "bad_signature", f"signature does not match the {purpose} document"
            ) from None
        return document


def _raw_public(item: str, source: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(item, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{source}: {item[:20]!r}... is not a base64 Ed25519 public key (32 bytes)"
        ) from None


def _pem_public(block: str, source: str) -> Ed25519PublicKey:
    try:
        public = serialization.load_pem_public_key(block.encode())
    except ValueError as error:
        raise ConfigError(f"{source}: unreadable PEM public key ({error})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{source}: a PEM public key that is not Ed25519")
    return public


def generate_key_files(private_path: Path) -> Path:
    """Write a new private key (mode 0600, never overwriting) and `<private>.pub`; return the
    public key's path. For `tagloop keygen` and the local stack."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path = public_key_path(private_path)
    public_path.write_text(public_key_text(private.public_key()) + "\n")
    return public_path


def public_key_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


@dataclass(frozen=True)
class KeySettings:
    """Where a service finds its keys. `from_env` keeps the paths, like every path setting (the
    files may be mounted later); `signer()` and `trusted()` read them once at start-up."""

    signing_key_file: Path | None
    public_keys: TrustedKeys | None
    public_keys_file: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeySettings:
        """TAGLOOP_MODEL_SIGNING_KEY_FILE, TAGLOOP_MODEL_PUBLIC_KEYS (checked now) and
        TAGLOOP_MODEL_PUBLIC_KEYS_FILE."""
        signing = env_optional(env, SIGNING_KEY_VAR)
        inline = env_optional(env, PUBLIC_KEYS_VAR)
        listed = env_optional(env, PUBLIC_KEYS_FILE_VAR)
        return cls(
            signing_key_file=None if signing is None else Path(signing).expanduser(),
            public_keys=None if inline is None else TrustedKeys.parse(inline, PUBLIC_KEYS_VAR),
            public_keys_file=None if listed is None else Path(listed).expanduser(),
        )

    def signer(self) -> Signer | None:
        """The learner's private key; None if TAGLOOP_MODEL_SIGNING_KEY_FILE is unset."""
        return None if self.signing_key_file is None else Signer.from_file(self.signing_key_file)

    def trusted(self) -> TrustedKeys | None:
        """Every public key configured (inline and file together); None if neither is set."""
        found = [] if self.public_keys is None else [self.public_keys]
        if self.public_keys_file is not None:
            path = self.public_keys_file
            try:
                with path.open(encoding="ascii") as handle:
                    text = handle.read(_MAX_KEY_FILE_BYTES)
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"{PUBLIC_KEYS_FILE_VAR}: cannot read {path}: {error}") from None
            found.append(TrustedKeys.parse(text, f"{PUBLIC_KEYS_FILE_VAR} ({path})"))
        if not found:
            return None
        trusted = found[0]
        for more in found[1:]:
            trusted = trusted + more
        return trusted
