"""UI server settings, read once from the environment at start-up."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tagloop.settings import ConfigError, env_float, env_int, env_str
from tagloop.web.forwarding import ProxyChain

log = logging.getLogger(__name__)

DEFAULT_UPSTREAMS = "http://127.0.0.1:8001,http://127.0.0.1:8002"
MIN_SECRET_LENGTH = 32


def annotator_secret(env: Mapping[str, str]) -> bytes:
    """The key that signs annotator cookies: set it (a Secret) so ids survive restarts.

    Unset, a random key is made once here, in the gunicorn master before the
    workers fork, so every worker accepts every other's cookies; browsers get
    new anonymous ids after a restart.
    """
    raw = env.get("TAGLOOP_UI_ANNOTATOR_SECRET", "").strip()
    if not raw:
        log.warning("TAGLOOP_UI_ANNOTATOR_SECRET is not set: annotator ids last until a restart")
        return secrets.token_bytes(32)
    if len(raw) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"TAGLOOP_UI_ANNOTATOR_SECRET must be at least {MIN_SECRET_LENGTH} characters"
        )
    return raw.encode()


def parse_base_url(name: str, item: str) -> str:
    """An http(s) base URL without query or fragment; trailing '/' dropped."""
    parts = urlsplit(item)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name}: {item!r} is not an http(s)://host[:port] URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}: {item!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{name}: {item!r} has an invalid port") from None
    return item.rstrip("/")


def parse_upstreams(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated http(s) base URLs (see `parse_base_url`), duplicates dropped."""
    upstreams = [parse_base_url(name, item) for item in (p.strip() for p in raw.split(",")) if item]
    if not upstreams:
        raise ConfigError(f"{name} must list at least one inference URL")
    return tuple(dict.fromkeys(upstreams))


def learner_url(env: Mapping[str, str]) -> str | None:
    """`TAGLOOP_UI_LEARNER_URL`, checked like an upstream; None when unset."""
    raw = env.get("TAGLOOP_UI_LEARNER_URL", "").strip()
    return parse_base_url("TAGLOOP_UI_LEARNER_URL", raw) if raw else None


@dataclass(frozen=True)
class UISettings:
    upstreams: tuple[str, ...]
    unlabeled_data: Path
    workers: int
    threads: int
    upstream_timeout_seconds: float
    proxy: ProxyChain
    model_poll_seconds: float
    annotator_secret: bytes
    identity_header: str | None
    """A header with the authenticated user, set by a trusted proxy (never by clients)."""
    learner_url: str | None = None
    """The learner: the model history page reads and promotes through it, the queue asks it
    which titles await a second opinion (unset: no history, the queue's file order)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UISettings:
        env = os.environ if env is None else env
        return cls(
            upstreams=parse_upstreams(
                "TAGLOOP_UI_UPSTREAMS", env_str(env, "TAGLOOP_UI_UPSTREAMS", DEFAULT_UPSTREAMS)
            ),
            unlabeled_data=Path(env_str(env, "TAGLOOP_UNLABELED_DATA", "data/unlabeled.tsv")),
            workers=env_int(env, "TAGLOOP_WORKERS", 2, minimum=1, maximum=64),
            threads=env_int(env, "TAGLOOP_THREADS", 4, minimum=1, maximum=256),
            upstream_timeout_seconds=env_float(
                env, "TAGLOOP_UI_UPSTREAM_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=300.0
            ),
            # Proxies in front of the UI (an ingress) whose X-Forwarded-* headers are trusted.
            proxy=ProxyChain.from_env(env, default_hops=0),
            model_poll_seconds=env_float(
                env, "TAGLOOP_UI_MODEL_POLL_SECONDS", 15.0, minimum=0.1, maximum=3600.0
            ),
            annotator_secret=annotator_secret(env),
            identity_header=env.get("TAGLOOP_UI_IDENTITY_HEADER", "").strip() or None,
            learner_url=learner_url(env),
        )
