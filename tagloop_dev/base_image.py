"""A Debian bookworm base image made locally, for engines that cannot pull one.

No container registry is reachable from this project's CI machines, so the
Dockerfile's `PYTHON_IMAGE` (python:3.11-slim-bookworm for everyone else) is
replaced there by an image built from Debian's own packages:
`debootstrap --variant=minbase bookworm` from the mirror apt already uses,
with Python 3.11 and venv, imported with `docker import`. Where the network
inspects TLS with its own CA, the host's CA bundle is copied in and named by
PIP_CERT / SSL_CERT_FILE / REQUESTS_CA_BUNDLE so pip inside builds reaches
PyPI; such an image is for local builds only and never published.

The image name carries a digest of everything that goes into it (suite,
packages, mirror, CA bundle), so a cached image is reused only while it would
come out the same. The root filesystem tarball is also kept under the user's
cache directory: a new engine data root (a wiped machine, another engine)
imports it again in seconds instead of bootstrapping for a minute.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tagloop_dev.docker_engine import Engine, EngineError, apt_install

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA_BUNDLE = "/usr/local/share/tagloop/host-ca.pem"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REPOSITORY = "tagloop-local/debian-python"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tagloop" / "base-image"


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive apt uses here (not the security archive), from its sources."""
    texts = [
        path.read_text()
        for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
        if path.is_file() and path.suffix in {".list", ".sources"}
    ]
    for text in texts:
        # deb822 (URIs: ...) and one-line (deb URI suite ...) formats.
        for uri in re.findall(r"^URIs:\s*(\S+)|^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            found = str(uri[0] or uri[1]).rstrip("/")
            if found.endswith("/debian"):
                return found
    return DEFAULT_MIRROR


def image_name(mirror: str, ca_bundle: bytes | None) -> str:
    """`tagloop-local/debian-python:bookworm-<digest of the inputs>`."""
    digest = hashlib.sha256()
    for part in (SUITE, " ".join(PACKAGES), mirror):
        digest.update(part.encode() + b"\0")
    digest.update(ca_bundle or b"")
    return f"{REPOSITORY}:{SUITE}-{digest.hexdigest()[:12]}"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One bootstrap at a time per cache directory (CI and a developer may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def bootstrap_tarball(mirror: str, ca_bundle: bytes | None, tarball: Path) -> None:
    """debootstrap the root filesystem and pack it as `tarball` (written atomically)."""
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(prefix="tagloop-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        if ca_bundle is not None:
            target = rootfs / IMAGE_CA_BUNDLE.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ca_bundle)
        partial = tarball.with_suffix(".partial")
        pack(rootfs, partial)
        partial.rename(tarball)


def pack(directory: Path, tarball: Path) -> None:
    """A tarball of `directory`'s contents with numeric owners, as `docker import` wants."""
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(directory), "-cf", str(tarball), "."],
        check=True,
        timeout=600,
    )


def import_tarball(engine: Engine, tarball: Path, name: str, changes: list[str]) -> None:
    """`docker import` a root filesystem tarball as `name`, with Dockerfile-style `changes`."""
    args = [arg for change in changes for arg in ("--change", change)]
    with tarball.open("rb") as stream:
        engine.docker("import", *args, "-", name, stdin=stream)


def import_changes(ca_bundle: bytes | None) -> list[str]:
    """The image configuration `docker import` gives the bare root filesystem."""
    env = {"PATH": _PATH, "LANG": "C.UTF-8"}
    if ca_bundle is not None:
        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env[name] = IMAGE_CA_BUNDLE
    changes = [f"ENV {key}={value}" for key, value in env.items()]
    return [*changes, 'CMD ["python3"]']


def ensure_base_image(engine: Engine) -> str:
    """The local base image's name, importing (and bootstrapping) it only when missing."""
    mirror = debian_mirror()
    ca_bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else None
    name = image_name(mirror, ca_bundle)
    if engine.docker("images", "--quiet", name).strip():
        return name
    cache = cache_dir()
    with locked(cache / ".lock"):
        tarball = cache / f"{name.rsplit(':', 1)[1]}.tar"
        if not tarball.exists():
            bootstrap_tarball(mirror, ca_bundle, tarball)
        import_tarball(engine, tarball, name, import_changes(ca_bundle))
    if not engine.docker("images", "--quiet", name).strip():
        raise EngineError(f"docker import did not produce {name}")
    return name


def ensure_terraform_image(engine: Engine) -> str:
    """The builder's terraform as an image holding only /bin/terraform, from this machine's.

    The builder stage copies terraform out of hashicorp/terraform; where that
    cannot be pulled, the binary this machine's own checks use is imported
    instead (named by its digest, so a changed binary makes a new image).
    """
    found = shutil.which("terraform")
    if found is None:
        raise EngineError(
            "terraform is not installed here, and hashicorp/terraform cannot be pulled"
        )
    binary = Path(found).resolve()
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    name = f"tagloop-local/terraform:{digest}"
    if engine.docker("images", "--quiet", name).strip():
        return name
    with tempfile.TemporaryDirectory(prefix="tagloop-terraform-") as tmp:
        tree = Path(tmp) / "tree"
        (tree / "bin").mkdir(parents=True)
        shutil.copy2(binary, tree / "bin" / "terraform")
        pack(tree, Path(tmp) / "terraform.tar")
        import_tarball(engine, Path(tmp) / "terraform.tar", name, [])
    return name
