"""The learner's settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from learning_service.gate import GateRules
from tagloop.settings import (
    CommonSettings,
    ConfigError,
    data_path,
    env_float,
    env_int,
    env_optional,
)

MIN_ADMIN_TOKEN_LENGTH = 16


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
    promotion_tolerance: float
    """The gate's total budget: how far below the best promoted model's F1 macro a candidate
    may lie (`learning_service.gate`)."""
    promotion_tag_floor: float
    promotion_tag_min_support: int
    admin_token: str | None

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
        )
