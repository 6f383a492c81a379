"""Download, verify, load and warm up one model version.

Bundles are kept in TAGLOOP_MODEL_CACHE_DIR/<version>, shared by the workers
of a replica: a worker downloads into a private temporary directory and
renames it into place, so no worker ever reads a half-written bundle.

Trust: the version id is checked and its cache path resolved inside the
cache directory before any file operation (`version_dir`). A bundle is
served only if its metadata carries a trusted signature for that version and
its artifact matches the digest the signed current pointer names; a cached
bundle is verified again on every load, so a corrupted or planted cache
entry is simply downloaded again (and refused if the bucket's copy does not
verify either).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference_service.model_holder import LoadedModel
from tagloop.channels.registry import Registry
from tagloop.domain.bundle import BundleError, load_bundle, read_metadata
from tagloop.domain.model import TagModel
from tagloop.domain.signing import METADATA_PURPOSE, SignatureError, TrustedKeys
from tagloop.domain.versions import VERSION_PATTERN, version_dir

log = logging.getLogger(__name__)

KEEP_CACHED_VERSIONS = 3
ABANDONED_SCRATCH_SECONDS = 3600
# Titles that touch the tokenizer, the vocabulary lookup and the scoring path
# once before real traffic does.
WARMUP_TITLES = (
    "How to merge two dictionaries in Python?",
    "Segmentation fault when freeing a pointer in C",
    "jQuery click handler not firing on dynamically added elements",
)


class ModelLoader:
    """Turns a version name into a `LoadedModel`; raises on any problem (the caller keeps
    the old model)."""

    def __init__(self, registry: Registry, cache_dir: Path, trusted: TrustedKeys) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self.trusted = trusted

    def load(self, version: str, signed_sha256: str) -> LoadedModel:
        """Load `version`, whose artifact digest `signed_sha256` comes from the signed pointer.

        InvalidVersion before any file operation; SignatureError (or the
        registry's Untrusted / IntegrityError) when the bundle does not verify.
        """
        bundle_dir = version_dir(self.cache_dir, version)  # before anything touches the disk
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            model, metadata = self._open(bundle_dir, version, signed_sha256)
        except (BundleError, SignatureError) as error:
            if bundle_dir.exists():
                log.warning("cached bundle %s unusable, downloading again: %s", version, error)
                self._discard(bundle_dir)
            self._download(version, bundle_dir)
            model, metadata = self._open(bundle_dir, version, signed_sha256)
        model.predict(list(WARMUP_TITLES))
        self._prune(keep=version)
        now = time.time()
        return LoadedModel(
            model=model,
            version=version,
            metadata=metadata,
            loaded_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            loaded_at_unix=now,
        )

    def _open(
        self, bundle_dir: Path, version: str, signed_sha256: str
    ) -> tuple[TagModel, dict[str, Any]]:
        """The bundle's model and metadata, if its signature and digests all hold."""
        metadata = self.trusted.verify(METADATA_PURPOSE, read_metadata(bundle_dir))
        if metadata.get("version") != version:
            raise SignatureError("wrong_version", f"{bundle_dir} is signed for another version")
        if metadata.get("sha256") != signed_sha256:
            raise SignatureError(
                "digest_mismatch",
                f"the signed pointer names digest {signed_sha256}, "
                f"the signed metadata of {version} {metadata.get('sha256')!r}",
            )
        model, _ = load_bundle(bundle_dir, signed_sha256)
        return model, metadata

    def _download(self, version: str, bundle_dir: Path) -> None:
        """Fetch (sha256-verified by the registry) into a private directory, then rename."""
        scratch = self._scratch("download")
        try:
            fetched = self.registry.fetch(version, scratch)
            try:
                os.replace(fetched, bundle_dir)
            except OSError:
                # Another worker renamed its copy into place first: use that one.
                if not bundle_dir.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _discard(self, bundle_dir: Path) -> None:
        """Move a bad cache entry aside first, so nobody sees it half-deleted."""
        aside = self._scratch("stale")
        try:
            os.replace(bundle_dir, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _scratch(self, purpose: str) -> Path:
        """A private name in the cache directory (same file system, so renames are atomic)."""
        return self.cache_dir / f".{purpose}-{os.getpid()}-{secrets.token_hex(4)}"

    def _prune(self, keep: str) -> None:
        """Keep the newest few versions (and `keep`), and drop scratch directories that a
        killed worker left behind, so the cache stays bounded."""
        # Only real directories this loader could have made: never a symlink, never a stranger.
        entries = [p for p in self.cache_dir.iterdir() if p.is_dir() and not p.is_symlink()]
        versions = sorted(
            (p for p in entries if VERSION_PATTERN.fullmatch(p.name)), key=lambda p: p.name
        )
        abandoned = time.time() - ABANDONED_SCRATCH_SECONDS
        leftovers = [
            p
            for p in entries
            if p.name.startswith((".download-", ".stale-")) and _mtime(p) < abandoned
        ]
        for path in versions[:-KEEP_CACHED_VERSIONS] + leftovers:
            if path.name != keep:
                shutil.rmtree(path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
