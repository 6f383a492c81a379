"""The S3 model registry (contracts §4), on boto3 only.

Layout in the bucket::

    models/<version>/model.npz        the artifact, opaque bytes to the registry
    models/<version>/metadata.json    written last: its presence marks a complete version
    models/current.json               {"version": ...}: the promoted model
    models/rollout.json               the candidate in rollout and its stage (tagloop.domain.rollout)
    models/<version>/rollout.json     {"version", "stages": [...]}: that version's stage history

With a `Signer` (the learner's private key) every metadata.json and
current.json is signed (tagloop.domain.signing); with `TrustedKeys` every
read verifies the signature first and raises `Untrusted` for an unsigned or
wrongly signed object, so a reader acts only on what the learner wrote.
Every version id is checked (tagloop.domain.versions) before it becomes a key.

The write order is what keeps readers safe without locks: a writer that dies
after the artifact leaves a version without metadata.json, which every read
path treats as absent, and `current.json` only ever moves to a version whose
metadata exists and says it passed the promotion gate. Readers verify the
artifact's sha256 before anything else sees it.

Works against AWS S3, MinIO, SeaweedFS and Google Cloud Storage's XML
interoperability endpoint: signature v4, configurable addressing style, and
the newer default request checksums turned off (GCS and older servers reject
them); integrity is covered by Content-MD5 on upload and sha256 on download.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from tagloop.domain.messages import utc_now
from tagloop.domain.rollout import InvalidRecord, RolloutRecord
from tagloop.domain.signing import (
    METADATA_PURPOSE,
    POINTER_PURPOSE,
    ROLLOUT_PURPOSE,
    SignatureError,
    Signer,
    TrustedKeys,
)
from tagloop.domain.versions import InvalidVersion, check_version, new_version
from tagloop.errors import TagloopError
from tagloop.settings import CommonSettings, env_choice, env_int, env_str

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.npz"
METADATA_NAME = "metadata.json"
PREFIX = "models/"
CURRENT_KEY = f"{PREFIX}current.json"
ROLLOUT_KEY = f"{PREFIX}rollout.json"
ROLLOUT_NAME = "rollout.json"
MANUAL_PROMOTION = "manual promotion"

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "Forbidden",
        "403",
        "InvalidToken",
        "ExpiredToken",
    }
)
_CHUNK = 1 << 20


class RegistryError(TagloopError):
    """The registry cannot do what was asked; the message says why and what to check."""


class IntegrityError(RegistryError):
    """An artifact's bytes do not match the sha256 its metadata records."""


class VersionNotFound(RegistryError):
    """No complete version by that name (absent, or its metadata.json was never written)."""


class CorruptObject(RegistryError):
    """A registry object that is not what the layout says (bad JSON, wrong shape)."""


class NotPromoted(RegistryError):
    """`set_current` on a version whose recorded decision is not "promoted"."""


class Untrusted(RegistryError):
    """An object not signed by a trusted key (or signed for something else); `reason` is the
    metric label (unsigned, bad_signature, unknown_key, malformed, wrong_version, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"refused ({reason}): {message}")
        self.reason = reason


__all__ = [
    "ARTIFACT_NAME",
    "CURRENT_KEY",
    "CorruptObject",
    "IntegrityError",
    "InvalidVersion",
    "NotPromoted",
    "Pointer",
    "Registry",
    "RegistryError",
    "Untrusted",
    "VersionNotFound",
    "check_version",
    "new_version",
]


@dataclass(frozen=True)
class Pointer:
    """What models/current.json says: the promoted version and its artifact's digest.

    `sha256` and `issued_at` are None only in an unsigned registry's legacy pointer.
    """

    version: str
    sha256: str | None
    issued_at: str | None


AddressingStyle = Literal["auto", "virtual", "path"]
RetryMode = Literal["legacy", "standard", "adaptive"]


def make_s3_client(
    endpoint_url: str | None = None,
    *,
    region: str = "us-east-1",
    addressing_style: str = "path",
    access_key: str | None = None,
    secret_key: str | None = None,
    connect_timeout: float = 3.0,
    read_timeout: float = 10.0,
    max_attempts: int = 5,
    retry_mode: str = "standard",
) -> Any:
    """A boto3 S3 client with the settings every S3-compatible store accepts.

    Without explicit keys boto3's default chain applies (AWS_* variables,
    profiles, workload identity). Retries use botocore's standard or adaptive
    mode: exponential backoff with jitter on throttling, 5xx and connection
    errors; `max_attempts` counts the first try, like AWS_MAX_ATTEMPTS.
    Timeouts are short so a dead endpoint fails fast instead of hanging a
    request handler.
    """
    config = Config(
        region_name=region,
        signature_version="s3v4",
        # botocore rejects any other value (InvalidS3AddressingStyleError, InvalidRetryModeError).
        s3={"addressing_style": cast(AddressingStyle, addressing_style)},
        retries={"mode": cast(RetryMode, retry_mode), "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session of its own: boto3's default session is not safe to create clients from threads.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def _digests(path: Path) -> tuple[str, str]:
    """(sha256 hex, base64 MD5) of a file in one pass: the registry's and S3's integrity checks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode()


def _check_decision(decision: Any) -> dict[str, Any]:
    if (
        not isinstance(decision, dict)
        or not isinstance(decision.get("promoted"), bool)
        or not isinstance(decision.get("reason"), str)
    ):
        raise RegistryError(
            f'metadata "decision" must be {{"promoted": bool, "reason": str}}, got {decision!r}'
        )
    return decision


class Registry:
    """Model versions in one bucket; every method is one short series of S3 calls.

    Safe to share between threads (boto3 clients are thread-safe).
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        addressing_style: str = "path",
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        signer: Signer | None = None,
        trusted: TrustedKeys | None = None,
        **client_options: Any,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.signer = signer
        # A writer trusts its own key (plus any others given, e.g. the previous one in a rotation).
        own = TrustedKeys.of([signer.public]) if signer is not None else None
        self.trusted = trusted + own if trusted and own else (trusted or own)
        self.client = make_s3_client(
            endpoint_url,
            region=region,
            addressing_style=addressing_style,
            access_key=access_key,
            secret_key=secret_key,
            **client_options,
        )

    @classmethod
    def from_settings(
        cls,
        settings: CommonSettings,
        env: Mapping[str, str] | None = None,
        *,
        signer: Signer | None = None,
        trusted: TrustedKeys | None = None,
    ) -> Registry:
        """The registry the services use; region and retry policy from the standard AWS_* names."""
        env = os.environ if env is None else env
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            addressing_style=settings.s3_addressing_style,
            signer=signer,
            trusted=trusted,
            region=env_str(env, "AWS_DEFAULT_REGION", "us-east-1"),
            retry_mode=env_choice(env, "AWS_RETRY_MODE", "standard", ("standard", "adaptive")),
            max_attempts=env_int(env, "AWS_MAX_ATTEMPTS", 5, minimum=1, maximum=20),
        )

    # --- keys and URIs -------------------------------------------------------

    @staticmethod
    def artifact_key(version: str) -> str:
        return f"{PREFIX}{check_version(version)}/{ARTIFACT_NAME}"

    @staticmethod
    def metadata_key(version: str) -> str:
        return f"{PREFIX}{check_version(version)}/{METADATA_NAME}"

    def artifact_uri(self, version: str) -> str:
        return f"s3://{self.bucket}/{self.artifact_key(version)}"

    def __repr__(self) -> str:
        return f"Registry(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    # --- error translation ---------------------------------------------------

    @contextmanager
    def _s3(
        self,
        action: str,
        missing: Callable[[], RegistryError] | None = None,
        tolerate: Collection[str] = (),
    ) -> Iterator[None]:
        """Turn botocore failures into RegistryErrors that say what to fix.

        `missing` builds the error for an absent object (404 / NoSuchKey);
        error codes in `tolerate` are swallowed.
        """
        where = f"s3://{self.bucket} at {self.endpoint_url or 'the AWS default endpoint'}"
        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            message = error.response.get("Error", {}).get("Message", "")
            if code in tolerate:
                return
            if missing is not None and code in _MISSING_CODES:
                raise missing() from error
            if code == "NoSuchBucket":
                raise RegistryError(
                    f"{action}: bucket {self.bucket!r} does not exist ({where}); create it "
                    "(Registry.ensure_bucket() or `tagloop s3-server --bucket` locally, "
                    "Terraform in the cloud) or fix TAGLOOP_S3_BUCKET"
                ) from error
            if code in _CREDENTIAL_CODES:
                raise RegistryError(
                    f"{action}: S3 refused the credentials ({code}: {message}) for {where}; "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the key's permissions"
                ) from error
            raise RegistryError(f"{action}: S3 error {code}: {message} ({where})") from error
        except NoCredentialsError as error:
            raise RegistryError(
                f"{action}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a workload identity)"
            ) from error
        except BotoCoreError as error:
            raise RegistryError(f"{action}: cannot reach {where}: {error}") from error

    def _missing(self, version: str) -> Callable[[], VersionNotFound]:
        return lambda: VersionNotFound(
            f"model version {version!r} not found in s3://{self.bucket} "
            f"(no {self.metadata_key(version)}: absent or incomplete)"
        )

    # --- primitive object operations -----------------------------------------

    def _get_json(self, key: str, action: str, missing: Callable[[], RegistryError]) -> Any:
        with self._s3(action, missing):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorruptObject(f"s3://{self.bucket}/{key} is not valid JSON: {error}") from None

    def _put_json(self, key: str, body: bytes, action: str) -> None:
        with self._s3(action):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )

    # --- public API ----------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (local and dev; the cloud uses Terraform)."""
        if self._exists(None, f"check bucket {self.bucket!r}"):
            return
        region = self.client.meta.region_name
        options = (
            {"CreateBucketConfiguration": {"LocationConstraint": region}}
            if self.endpoint_url is None and region != "us-east-1"
            else {}
        )
        # BucketAlreadyOwnedByYou: a concurrent creator won the race, which is fine.
        with self._s3(f"create bucket {self.bucket!r}", tolerate={"BucketAlreadyOwnedByYou"}):
            self.client.create_bucket(Bucket=self.bucket, **options)
            log.info("created bucket %s", self.bucket)

    def put_version(self, version: str, bundle_dir: str | Path, metadata: Mapping[str, Any]) -> str:
        """Upload a bundle's artifact, then its metadata.json; return the artifact URI.

        Versions are immutable: putting one that is already complete is an
        error. The metadata's sha256 is computed from the artifact when absent
        and must match it when present.
        """
        check_version(version)
        artifact = Path(bundle_dir) / ARTIFACT_NAME
        if not artifact.is_file():
            raise RegistryError(f"{artifact}: no artifact to upload")
        sha256, md5 = _digests(artifact)
        recorded = metadata.get("sha256")
        if recorded is not None and recorded != sha256:
            raise IntegrityError(
                f"{artifact}: sha256 {sha256} does not match the metadata's {recorded}"
            )
        if metadata.get("version", version) != version:
            raise RegistryError(f"metadata names version {metadata['version']!r}, not {version!r}")
        if self._exists(self.metadata_key(version), f"check version {version}"):
            raise RegistryError(f"model version {version!r} already exists; versions are immutable")
        document = {
            "created_at": utc_now(),
            "artifact": ARTIFACT_NAME,
            "decision": {"promoted": False, "reason": "no promotion decision recorded"},
            **metadata,
            "version": version,
            "sha256": sha256,
        }
        _check_decision(document["decision"])
        # Unserialisable metadata fails before anything is uploaded.
        encoded = _encode(self._signed(METADATA_PURPOSE, document))
        with self._s3(f"upload {self.artifact_key(version)}"), artifact.open("rb") as body:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.artifact_key(version),
                Body=body,
                ContentMD5=md5,
                ContentType="application/octet-stream",
                Metadata={"sha256": sha256},
            )
        self._put_json(self.metadata_key(version), encoded, f"upload {self.metadata_key(version)}")
        log.info("stored model version %s", version, extra={"version": version, "sha256": sha256})
        return self.artifact_uri(version)

    def get_metadata(self, version: str) -> dict[str, Any]:
        """A complete version's metadata; VersionNotFound if absent or incomplete, Untrusted
        if this registry verifies signatures and the metadata's does not hold."""
        key = self.metadata_key(version)
        metadata = self._get_json(key, f"read {key}", self._missing(version))
        self._verify(METADATA_PURPOSE, metadata, f"s3://{self.bucket}/{key}")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("sha256"), str):
            raise CorruptObject(f"s3://{self.bucket}/{key}: not a model metadata object")
        if self.trusted is not None and metadata.get("version") != version:
            # Signed metadata copied under another version's key.
            raise Untrusted(
                "wrong_version", f"s3://{self.bucket}/{key} is signed for another version"
            )
        return metadata

    def _signed_json(self, key: str, purpose: str) -> tuple[Any, str] | None:
        """The JSON document at `key`, its signature checked for `purpose`, and where it
        lives (for errors); None when the object does not exist."""
        try:
            document = self._get_json(key, f"read {key}", _Absent)
        except _Absent:
            return None
        where = f"s3://{self.bucket}/{key}"
        self._verify(purpose, document, where)
        return document, where

    def current_pointer(self) -> Pointer | None:
        """models/current.json (verified when this registry has trusted keys), or None before
        the first promotion."""
        found = self._signed_json(CURRENT_KEY, POINTER_PURPOSE)
        if found is None:
            return None
        document, where = found
        if not isinstance(document, dict) or not isinstance(document.get("version"), str):
            raise CorruptObject(f'{where}: expected {{"version": str}}')
        try:
            version = check_version(document["version"])
        except InvalidVersion as error:
            raise CorruptObject(f"{where}: {error}") from None
        sha256, issued_at = document.get("sha256"), document.get("issued_at")
        if self.trusted is not None and not (
            isinstance(sha256, str) and isinstance(issued_at, str)
        ):
            raise Untrusted("malformed", f"{where}: a signed pointer needs sha256 and issued_at")
        return Pointer(
            version,
            sha256 if isinstance(sha256, str) else None,
            issued_at if isinstance(issued_at, str) else None,
        )

    def current_version(self) -> str | None:
        """The promoted version named by models/current.json, or None before the first one."""
        pointer = self.current_pointer()
        return None if pointer is None else pointer.version

    def set_current(self, version: str) -> None:
        """Point models/current.json at a complete version that passed the promotion gate."""
        metadata = self.get_metadata(version)
        decision = _check_decision(metadata.get("decision"))
        if not decision["promoted"]:
            raise NotPromoted(
                f"model version {version!r} was not promoted ({decision['reason']}); "
                "use promote() to roll back or forward to it deliberately"
            )
        if not self._exists(self.artifact_key(version), f"check {self.artifact_key(version)}"):
            raise VersionNotFound(f"model version {version!r} has metadata but no artifact")
        pointer = {"version": version, "sha256": metadata["sha256"], "issued_at": utc_now()}
        self._put_json(
            CURRENT_KEY, _encode(self._signed(POINTER_PURPOSE, pointer)), f"write {CURRENT_KEY}"
        )
        log.info("current model version is now %s", version, extra={"version": version})

    def list_versions(self) -> list[dict[str, Any]]:
        """Every complete version's metadata, oldest first.

        A corrupt or oddly named entry is logged and skipped, so one bad
        object cannot hide every other version; S3 failures still raise.
        """
        versions: list[str] = []
        with self._s3("list model versions"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=PREFIX
            ):
                for item in page.get("Contents", []):
                    parts = item["Key"].split("/")
                    if len(parts) == 3 and parts[2] == METADATA_NAME:
                        versions.append(parts[1])

        def read(version: str) -> dict[str, Any] | None:
            try:
                return self.get_metadata(version)
            except (CorruptObject, InvalidVersion, VersionNotFound, Untrusted) as error:
                log.warning("skipping model version %s: %s", version, error)
                return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            found = [meta for meta in pool.map(read, sorted(versions)) if meta is not None]
        return found

    def fetch(self, version: str, dest_dir: str | Path) -> Path:
        """Download a version into `dest_dir` (model.npz + metadata.json) and return it.

        The artifact lands in a temp file beside its destination and is moved
        into place only once its sha256 matches the metadata, so the
        destination never holds partial or unverified bytes.
        """
        metadata = self.get_metadata(version)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        key = self.artifact_key(version)
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{ARTIFACT_NAME}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                actual = self._download(key, handle)
            if actual != metadata["sha256"]:
                raise IntegrityError(
                    f"s3://{self.bucket}/{key}: sha256 {actual} does not match "
                    f"the metadata's {metadata['sha256']}; refusing the artifact"
                )
            os.replace(tmp, dest / ARTIFACT_NAME)
        finally:
            tmp.unlink(missing_ok=True)
        _write_json_atomically(dest / METADATA_NAME, metadata)
        return dest

    def promote(self, version: str, reason: str = MANUAL_PROMOTION) -> dict[str, Any]:
        """Roll back or forward to a complete version: mark it promoted, then move current.json.

        A version that was promoted before keeps its original decision.
        Returns the version's (possibly updated, then re-signed) metadata.
        """
        metadata = self.get_metadata(version)
        decision = metadata.get("decision")
        if not (isinstance(decision, dict) and decision.get("promoted") is True):
            metadata["decision"] = {"promoted": True, "reason": reason}
            metadata = self._signed(METADATA_PURPOSE, metadata)
            key = self.metadata_key(version)
            self._put_json(key, _encode(metadata), f"update {key}")
        self.set_current(version)
        return metadata

    # --- rollout records (tagloop.domain.rollout) -----------------------------

    def rollout_record(self) -> RolloutRecord | None:
        """models/rollout.json (verified when this registry has trusted keys), or None before
        the first staged rollout."""
        found = self._signed_json(ROLLOUT_KEY, ROLLOUT_PURPOSE)
        if found is None:
            return None
        document, where = found
        try:
            return RolloutRecord.from_dict(document)
        except InvalidRecord as error:
            raise CorruptObject(f"{where}: {error}") from None

    def rollout_history(self, version: str) -> list[dict[str, Any]]:
        """The stage changes recorded for `version`, oldest first ([] if it never had any)."""
        key = f"{PREFIX}{check_version(version)}/{ROLLOUT_NAME}"
        try:
            document = self._get_json(key, f"read {key}", _Absent)
        except _Absent:
            return []
        self._verify(ROLLOUT_PURPOSE, document, f"s3://{self.bucket}/{key}")
        if not isinstance(document, dict) or document.get("version") != version:
            raise CorruptObject(f"s3://{self.bucket}/{key}: not {version}'s stage history")
        stages = document.get("stages")
        if not isinstance(stages, list):
            raise CorruptObject(f"s3://{self.bucket}/{key}: not {version}'s stage history")
        return stages

    def record_stage(self, record: RolloutRecord) -> None:
        """Append a stage change to the version's history, then point models/rollout.json at
        it: both signed, the pointer last, so what replicas follow is always in the history."""
        key = f"{PREFIX}{check_version(record.version)}/{ROLLOUT_NAME}"
        try:
            earlier = self.rollout_history(record.version)
        except (Untrusted, CorruptObject) as error:  # not the learner's: a signed one replaces it
            log.warning("replacing %s: %s", key, error)
            earlier = []
        stages = [*earlier, record.to_dict()]
        history = {"version": record.version, "stages": stages}
        self._put_json(key, _encode(self._signed(ROLLOUT_PURPOSE, history)), f"write {key}")
        document = self._signed(ROLLOUT_PURPOSE, record.to_dict())
        self._put_json(ROLLOUT_KEY, _encode(document), f"write {ROLLOUT_KEY}")
        log.info(
            "model version %s is now in stage %s: %s",
            record.version,
            record.stage,
            record.reason,
            extra={"version": record.version, "stage": str(record.stage)},
        )

    def set_decision(self, version: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a version's recorded decision (re-signed): a candidate rolled back on live
        evidence is no longer a promoted version, so `rollback` never returns to it."""
        metadata = {**self.get_metadata(version), "decision": _check_decision(dict(decision))}
        metadata = self._signed(METADATA_PURPOSE, metadata)
        key = self.metadata_key(version)
        self._put_json(key, _encode(metadata), f"update {key}")
        return metadata

    # --- helpers -------------------------------------------------------------

    def _signed(self, purpose: str, document: dict[str, Any]) -> dict[str, Any]:
        return document if self.signer is None else self.signer.sign(purpose, document)

    def _verify(self, purpose: str, document: Any, where: str) -> None:
        if self.trusted is None:
            return
        try:
            self.trusted.verify(purpose, document)
        except SignatureError as error:
            raise Untrusted(error.reason, f"{where}: {error.detail}") from None

    def _exists(self, key: str | None, action: str) -> bool:
        """HEAD an object (or the bucket itself when `key` is None)."""
        try:
            with self._s3(action, missing=_Absent):
                if key is None:
                    self.client.head_bucket(Bucket=self.bucket)
                else:
                    self.client.head_object(Bucket=self.bucket, Key=key)
        except _Absent:
            return False
        return True

    def _download(self, key: str, handle: BinaryIO) -> str:
        """Stream an object into `handle`; return the sha256 of what was written."""
        digest = hashlib.sha256()
        missing = partial(VersionNotFound, f"s3://{self.bucket}/{key} is missing")
        with self._s3(f"download {key}", missing):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
        return digest.hexdigest()


class _Absent(RegistryError):
    """Internal: an object that is legitimately missing (no current.json yet, a free key)."""


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, indent=2, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise RegistryError(f"metadata is not plain JSON: {error}") from None


def _write_json_atomically(path: Path, value: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
