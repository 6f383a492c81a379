"""Download, verify, load and warm up one model version.

Bundles are kept in TAGLOOP_MODEL_CACHE_DIR/<version>, shared by the workers
of a replica: a worker downloads into a private temporary directory and
renames it into place, so no worker ever reads a half-written bundle. A
cached bundle is verified again on every load (the sha256 check in
`load_bundle`), so a corrupted cache entry is simply downloaded again.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from inference_service.model_holder import LoadedModel
from tagloop.channels.registry import Registry
from tagloop.domain.bundle import BundleError, load_bundle

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

    def __init__(self, registry: Registry, cache_dir: Path) -> None:
        self.registry = registry
        self.cache_dir = cache_dir

    def load(self, version: str, expected_sha256: str | None = None) -> LoadedModel:
        """`expected_sha256` comes from a broadcast; the registry's metadata is checked too."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        bundle_dir = self.cache_dir / version
        try:
            model, metadata = load_bundle(bundle_dir, expected_sha256)
        except BundleError as error:
            if bundle_dir.exists():
                log.warning("cached bundle %s unusable, downloading again: %s", version, error)
                self._discard(bundle_dir)
            self._download(version, bundle_dir)
            model, metadata = load_bundle(bundle_dir, expected_sha256)
        if metadata.get("version", version) != version:
            raise BundleError(f"bundle of {version} says it is version {metadata['version']!r}")
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
        entries = [p for p in self.cache_dir.iterdir() if p.is_dir()]
        versions = sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)
        abandoned = time.time() - ABANDONED_SCRATCH_SECONDS
        leftovers = [p for p in entries if p.name.startswith(".") and _mtime(p) < abandoned]
        for path in versions[:-KEEP_CACHED_VERSIONS] + leftovers:
            if path.name != keep:
                shutil.rmtree(path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
