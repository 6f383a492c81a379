"""Twelve-factor configuration: typed, validated environment variables.

Every service reads its settings once at start-up through these helpers, so a
bad value fails fast with a message naming the variable instead of surfacing
later as an obscure error deep in a client library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tagloop.errors import TagloopError


class ConfigError(TagloopError, ValueError):
    """A configuration variable is missing or invalid; the message names it."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value:
        raise ConfigError(f"{name} must not be empty")
    return value


def env_optional(env: Mapping[str, str], name: str, default: str = "") -> str | None:
    """A string that may be unset or empty (meaning: use the library default)."""
    value = env.get(name, default).strip()
    return value or None


def env_int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    raw = env.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if math.isnan(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name} must be {bounds}, got {raw}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "true" if default else "false").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class CommonSettings:
    """Settings both services share (contracts §2)."""

    gcp_project: str
    feedback_topic: str
    feedback_subscription: str
    model_topic: str
    s3_endpoint_url: str | None
    s3_bucket: str
    s3_addressing_style: str
    pubsub_emulator_host: str | None
    # True: the services create the topics and subscriptions they use (local
    # default). False: Terraform created them; the services only check.
    pubsub_provision: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommonSettings:
        env = os.environ if env is None else env
        return cls(
            gcp_project=env_str(env, "TAGLOOP_GCP_PROJECT", "tagloop-local"),
            feedback_topic=env_str(env, "TAGLOOP_FEEDBACK_TOPIC", "tag-feedback"),
            feedback_subscription=env_str(env, "TAGLOOP_FEEDBACK_SUBSCRIPTION", "learner"),
            model_topic=env_str(env, "TAGLOOP_MODEL_TOPIC", "model-updates"),
            s3_endpoint_url=env_optional(env, "TAGLOOP_S3_ENDPOINT_URL", "http://127.0.0.1:8333"),
            s3_bucket=env_str(env, "TAGLOOP_S3_BUCKET", "tagloop-models"),
            s3_addressing_style=env_choice(
                env, "TAGLOOP_S3_ADDRESSING_STYLE", "path", ("path", "virtual", "auto")
            ),
            pubsub_emulator_host=env_optional(env, "PUBSUB_EMULATOR_HOST"),
            pubsub_provision=env_bool(env, "TAGLOOP_PUBSUB_PROVISION", True),
        )


def data_path(env: Mapping[str, str], name: str, default: Path) -> Path:
    """A directory path setting (created by the service that owns it)."""
    return Path(env_str(env, name, str(default))).expanduser()
