"""The pure parts of the container tooling: mirror discovery, image naming, stack state."""

from __future__ import annotations

from pathlib import Path

from tagloop_dev.base_image import DEFAULT_MIRROR, debian_mirror, image_name, import_changes
from tagloop_dev.compose_stack import (
    LOCAL_OVERRIDE,
    PORT_VARIABLES,
    ComposeStack,
    wants_local_images,
)
from tagloop_dev.docker_engine import SOCKET, Engine


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_mirror_is_the_debian_archive_apt_uses_not_the_security_one(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n",
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_one_line_sources_and_no_sources_at_all(tmp_path: Path) -> None:
    assert debian_mirror(tmp_path) == DEFAULT_MIRROR
    write(tmp_path / "sources.list", "deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://other.example/debian"


def test_the_image_name_changes_with_anything_that_goes_into_the_image() -> None:
    name = image_name("http://a/debian", None)
    assert name.startswith("tagloop-local/debian-python:bookworm-")
    assert image_name("http://a/debian", None) == name
    assert image_name("http://b/debian", None) != name
    assert image_name("http://a/debian", b"-----BEGIN CERTIFICATE-----") != name


def test_a_host_ca_bundle_is_named_for_pip_and_openssl() -> None:
    assert not any("PIP_CERT" in change for change in import_changes(None))
    changes = import_changes(b"pem")
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        assert any(change.startswith(f"ENV {variable}=") for change in changes)
    assert any(change.startswith("ENV PATH=") for change in changes)


def test_local_images_only_on_an_engine_started_here_unless_forced() -> None:
    ours = Engine(f"unix://{SOCKET}", pid=123)
    users = Engine(host=None)
    assert wants_local_images(ours, {}) and not wants_local_images(users, {})
    assert wants_local_images(users, {"TAGLOOP_COMPOSE_LOCAL": "1"})
    assert not wants_local_images(ours, {"TAGLOOP_COMPOSE_LOCAL": "0"})


def test_the_stack_state_survives_a_round_trip(tmp_path: Path) -> None:
    stack = ComposeStack(Engine(f"unix://{SOCKET}", pid=42, ip_forward="0"), project="p")
    stack.files.append(str(LOCAL_OVERRIDE))
    stack.variables["TAGLOOP_UI_PORT"] = "18080"
    stack.save(tmp_path / "compose.json")
    loaded = ComposeStack.load(tmp_path / "compose.json")
    assert loaded is not None and loaded == stack
    assert loaded.local
    assert loaded.port("TAGLOOP_UI_PORT") == 18080
    assert loaded.port("TAGLOOP_LEARNER_PORT") == PORT_VARIABLES["TAGLOOP_LEARNER_PORT"]
    assert ComposeStack.load(tmp_path / "missing.json") is None
