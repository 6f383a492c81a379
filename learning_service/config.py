"""The learner's settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from learning_service.gate import GateRules
from learning_service.rollout_policy import RolloutSettings
from tagloop.channels.bus import DEFAULT_REJECT_LOG_BACKUPS, DEFAULT_REJECT_LOG_MAX_BYTES
from tagloop.domain.signing import SIGNING_KEY_VAR, KeySettings, Signer
from tagloop.settings import (
    CommonSettings,
    ConfigError,
    data_path,
    env_float,
    env_int,
    env_optional,
)

MIN_ADMIN_TOKEN_LENGTH = 16
MIN_REJECT_LOG_BYTES = 256 * 1024
"""Room for a few entries of the largest size (a 64 KiB payload, base64)."""
DEFAULT_TRAINING_WINDOW = 20_000
"""Rows; chosen by measurement (docs/model.md "Training window")."""
MIN_TRAINING_WINDOW = 1_000
DEFAULT_FIT_JOBS = 2
"""Threads of a fit: both cores of a small machine (docs/learning.md "Fit threads")."""


@dataclass(frozen=True)
class LearnerSettings:
    """Contracts §2 plus the learner's own variables (CONTRIBUTING "Configuration variables")."""

    common: CommonSettings
    data_dir: Path
    train_data: Path
    test_data: Path
    refit_every: int
    min_fit_interval_seconds: float
    new_tag_min_support: int
    new_tag_min_annotators: int
    promotion_tolerance: float
    """The gate's total budget: how far below the best promoted model's F1 macro a candidate
    may lie (`learning_service.gate`)."""
    promotion_tag_floor: float
    promotion_tag_min_support: int
    admin_token: str | None
    reject_log_max_bytes: int
    reject_log_backups: int
    keys: KeySettings
    """TAGLOOP_MODEL_SIGNING_KEY_FILE, the key models and current.json are signed with (required
    by `Learner.from_settings`), and keys trusted besides its own (TAGLOOP_MODEL_PUBLIC_KEYS /
    _FILE): the previous key while the signing key rotates."""
    # Alert TagloopModelStale fires when no model was promoted for this long
    # while feedback flows (exported as tagloop_model_stale_alert_seconds).
    model_stale_alert_seconds: float = 3600.0
    # Copy feedback.csv to the bucket this often (0: never; the cloud sets it).
    backup_interval_seconds: float = 0.0
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    training_window: int | None = DEFAULT_TRAINING_WINDOW
    """TAGLOOP_TRAINING_WINDOW: the most rows a fit trains on (corrections first, then a fixed
    sample of the bootstrap corpus; `learning_service.training.within_window`), so a refit's
    cost stops growing with the corpus; 0 in the environment: no window."""
    fit_jobs: int = DEFAULT_FIT_JOBS
    """TAGLOOP_FIT_JOBS: threads fitting the per-tag SVMs in the fit worker (`TagModel.n_jobs`);
    1 leaves the other cores to replicas on the same machine and makes fits reproducible."""

    def require_signer(self) -> Signer:
        signer = self.keys.signer()
        if signer is None:
            raise ConfigError(
                f"{SIGNING_KEY_VAR} is not set: the learner signs every model and the "
                "current pointer, and replicas serve nothing unsigned; create a key with "
                "`tagloop keygen <path>` (the local stack makes one in its var directory)"
            )
        return signer

    @property
    def gate_rules(self) -> GateRules:
        return GateRules(
            budget=self.promotion_tolerance,
            tag_floor=self.promotion_tag_floor,
            tag_min_support=self.promotion_tag_min_support,
        )

    @property
    def feedback_csv(self) -> Path:
        return self.data_dir / "feedback.csv"

    @property
    def rejects_log(self) -> Path:
        return self.data_dir / "rejects.jsonl"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LearnerSettings:
        env = os.environ if env is None else env
        token = env_optional(env, "TAGLOOP_ADMIN_TOKEN")
        if token is not None and len(token) < MIN_ADMIN_TOKEN_LENGTH:
            # A short token is guessable; refuse it rather than expose the admin endpoints.
            raise ConfigError(
                f"TAGLOOP_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters"
            )
        return cls(
            common=CommonSettings.from_env(env),
            data_dir=data_path(env, "TAGLOOP_DATA_DIR", Path("var/learner")),
            train_data=data_path(env, "TAGLOOP_TRAIN_DATA", Path("data/train.tsv")),
            test_data=data_path(env, "TAGLOOP_TEST_DATA", Path("data/test.tsv")),
            refit_every=env_int(env, "TAGLOOP_REFIT_EVERY", 100, minimum=1),
            min_fit_interval_seconds=env_float(env, "TAGLOOP_MIN_FIT_INTERVAL_SECONDS", 10.0),
            new_tag_min_support=env_int(env, "TAGLOOP_NEW_TAG_MIN_SUPPORT", 3, minimum=1),
            new_tag_min_annotators=env_int(
                env, "TAGLOOP_NEW_TAG_MIN_ANNOTATORS", 3, minimum=1, maximum=1000
            ),
            promotion_tolerance=env_float(
                env, "TAGLOOP_PROMOTION_TOLERANCE", 0.01, minimum=0.0, maximum=1.0
            ),
            promotion_tag_floor=env_float(
                env, "TAGLOOP_PROMOTION_TAG_FLOOR", 0.15, minimum=0.0, maximum=1.0
            ),
            promotion_tag_min_support=env_int(
                env, "TAGLOOP_PROMOTION_TAG_MIN_SUPPORT", 30, minimum=1
            ),
            admin_token=token,
            reject_log_max_bytes=env_int(
                env,
                "TAGLOOP_REJECT_LOG_MAX_BYTES",
                DEFAULT_REJECT_LOG_MAX_BYTES,
                minimum=MIN_REJECT_LOG_BYTES,
            ),
            reject_log_backups=env_int(
                env,
                "TAGLOOP_REJECT_LOG_BACKUPS",
                DEFAULT_REJECT_LOG_BACKUPS,
                minimum=0,
                maximum=100,
            ),
            keys=KeySettings.from_env(env),
            model_stale_alert_seconds=env_float(
                env, "TAGLOOP_MODEL_STALE_ALERT_SECONDS", 3600.0, minimum=60.0
            ),
            backup_interval_seconds=env_float(env, "TAGLOOP_BACKUP_INTERVAL_SECONDS", 0.0),
            rollout=RolloutSettings.from_env(env),
            training_window=training_window(env),
            fit_jobs=env_int(env, "TAGLOOP_FIT_JOBS", DEFAULT_FIT_JOBS, minimum=1, maximum=64),
        )


def training_window(env: Mapping[str, str]) -> int | None:
    """TAGLOOP_TRAINING_WINDOW, None for 0 (no window); a tiny window is refused, as it would
    train on the last few corrections alone."""
    rows = env_int(env, "TAGLOOP_TRAINING_WINDOW", DEFAULT_TRAINING_WINDOW, minimum=0)
    if 0 < rows < MIN_TRAINING_WINDOW:
        raise ConfigError(
            f"TAGLOOP_TRAINING_WINDOW must be 0 (no window) or at least {MIN_TRAINING_WINDOW}"
        )
    return rows or None
