"""Inference settings, read once from the environment (CONTRIBUTING "Configuration variables")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tagloop.domain.signing import KeySettings
from tagloop.settings import CommonSettings, data_path, env_float, env_int, env_str
from tagloop.web.forwarding import ProxyChain

# A JSON body bigger than this is refused with 413 before it is parsed:
# 1,000 titles of 300 characters, JSON-escaped, fit comfortably.
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 1000


@dataclass(frozen=True)
class InferenceSettings:
    common: CommonSettings
    workers: int
    threads: int
    model_cache_dir: Path
    reconcile_seconds: float
    cors_origin: str
    feedback_rate: float
    feedback_burst: int
    publish_timeout_seconds: float
    proxy: ProxyChain
    keys: KeySettings
    """The learner's public key(s): TAGLOOP_MODEL_PUBLIC_KEYS and/or _FILE. With neither, no
    model is ever loaded (the replica stays not ready and says why)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InferenceSettings:
        env = os.environ if env is None else env
        return cls(
            common=CommonSettings.from_env(env),
            workers=env_int(env, "TAGLOOP_WORKERS", 2, minimum=1, maximum=64),
            threads=env_int(env, "TAGLOOP_THREADS", 4, minimum=1, maximum=256),
            model_cache_dir=data_path(env, "TAGLOOP_MODEL_CACHE_DIR", Path("var/inference-cache")),
            reconcile_seconds=env_float(env, "TAGLOOP_RECONCILE_SECONDS", 60.0, minimum=0.1),
            cors_origin=env_str(env, "TAGLOOP_CORS_ORIGIN", "http://127.0.0.1:8080"),
            feedback_rate=env_float(env, "TAGLOOP_FEEDBACK_RATE", 5.0, minimum=0.001),
            feedback_burst=env_int(env, "TAGLOOP_FEEDBACK_BURST", 20, minimum=1),
            publish_timeout_seconds=env_float(
                env, "TAGLOOP_PUBLISH_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=25.0
            ),
            proxy=ProxyChain.from_env(env, default_hops=1),
            keys=KeySettings.from_env(env),
        )
