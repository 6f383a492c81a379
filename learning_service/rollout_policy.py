"""When a candidate in rollout advances or is rolled back: settings, evidence, the stage machine.

Pure and in-process (unit-tested without servers). The evidence is paired:
each correction that arrives while a stage lasts is scored for both the
served (base) model and the candidate on the same title against the tags the
user chose, so the comparison does not depend on which titles the canary
happened to get. Agreement is the mean Jaccard overlap of the two models'
tag sets on those titles.

Rules, evaluated after every batch of corrections (and when a stage starts):

- fewer corrections than the stage's minimum: stay (not enough evidence);
- candidate precision below the base's by more than the tolerance: roll back;
- in shadow, agreement below the minimum: roll back (too different to show
  users without a person looking at it; promote it by hand if it is right);
- otherwise advance: shadow -> canary -> full.

A minimum of 0 makes the stage's evidence vacuous: it advances at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tagloop.domain.rollout import Stage
from tagloop.settings import env_bool, env_float, env_int


@dataclass(frozen=True)
class RolloutSettings:
    """TAGLOOP_ROLLOUT_* (docs/learning.md "Rollout")."""

    enabled: bool = False
    """Off: a promoted candidate becomes current at once (the behaviour before stages)."""
    canary_fraction: float = 0.1
    shadow_min_corrections: int = 50
    canary_min_corrections: int = 50
    min_agreement: float = 0.5
    precision_tolerance: float = 0.02

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RolloutSettings:
        env = os.environ if env is None else env
        return cls(
            enabled=env_bool(env, "TAGLOOP_ROLLOUT_ENABLED", False),
            canary_fraction=env_float(
                env, "TAGLOOP_ROLLOUT_CANARY_FRACTION", 0.1, minimum=0.0, maximum=1.0
            ),
            shadow_min_corrections=env_int(
                env, "TAGLOOP_ROLLOUT_SHADOW_MIN_CORRECTIONS", 50, minimum=0
            ),
            canary_min_corrections=env_int(
                env, "TAGLOOP_ROLLOUT_CANARY_MIN_CORRECTIONS", 50, minimum=0
            ),
            min_agreement=env_float(
                env, "TAGLOOP_ROLLOUT_MIN_AGREEMENT", 0.5, minimum=0.0, maximum=1.0
            ),
            precision_tolerance=env_float(
                env, "TAGLOOP_ROLLOUT_PRECISION_TOLERANCE", 0.02, minimum=0.0, maximum=1.0
            ),
        )

    def min_corrections(self, stage: Stage) -> int:
        return self.shadow_min_corrections if stage is Stage.SHADOW else self.canary_min_corrections


@dataclass
class Score:
    """Micro-averaged precision and recall of one model's tag sets against users' tags."""

    hits: int = 0
    predicted: int = 0
    actual: int = 0

    def add(self, predicted: set[str], actual: set[str]) -> None:
        self.hits += len(predicted & actual)
        self.predicted += len(predicted)
        self.actual += len(actual)

    def precision(self) -> float | None:
        return self.hits / self.predicted if self.predicted else None

    def recall(self) -> float | None:
        return self.hits / self.actual if self.actual else None


@dataclass
class Evidence:
    """What one stage of one rollout has seen so far."""

    corrections: int = 0
    agreement_sum: float = 0.0
    base: Score = field(default_factory=Score)
    candidate: Score = field(default_factory=Score)

    def add(self, base: list[str], candidate: list[str], actual: list[str]) -> None:
        """One corrected title: the two models' tags for it and the user's."""
        base_set, candidate_set, actual_set = set(base), set(candidate), set(actual)
        union = base_set | candidate_set
        self.corrections += 1
        self.agreement_sum += len(base_set & candidate_set) / len(union) if union else 1.0
        self.base.add(base_set, actual_set)
        self.candidate.add(candidate_set, actual_set)

    def agreement(self) -> float | None:
        return self.agreement_sum / self.corrections if self.corrections else None

    def summary(self) -> dict[str, Any]:
        return {
            "corrections": self.corrections,
            "agreement": self.agreement(),
            "base": {"precision": self.base.precision(), "recall": self.base.recall()},
            "candidate": {
                "precision": self.candidate.precision(),
                "recall": self.candidate.recall(),
            },
        }


NEXT_STAGE = {Stage.SHADOW: Stage.CANARY, Stage.CANARY: Stage.FULL}


def decide(stage: Stage, evidence: Evidence, policy: RolloutSettings) -> tuple[Stage, str] | None:
    """The stage to move to and why, or None to stay (see the module docstring)."""
    if not stage.active:
        return None
    needed = policy.min_corrections(stage)
    if evidence.corrections < needed:
        return None
    summary = f"{evidence.corrections} corrections in {stage}"
    base, candidate = evidence.base.precision(), evidence.candidate.precision()
    if base is not None and candidate is not None:
        if candidate < base - policy.precision_tolerance:
            return Stage.ROLLED_BACK, (
                f"{summary}: online precision {candidate:.3f} is below the served model's "
                f"{base:.3f} by more than {policy.precision_tolerance}"
            )
        summary += f", online precision {candidate:.3f} vs served {base:.3f}"
    agreement = evidence.agreement()
    if stage is Stage.SHADOW and agreement is not None:
        if agreement < policy.min_agreement:
            return Stage.ROLLED_BACK, (
                f"{summary}: agreement with the served model {agreement:.3f} is below "
                f"{policy.min_agreement}"
            )
        summary += f", agreement {agreement:.3f}"
    if needed == 0 and evidence.corrections == 0:
        summary = f"no corrections required in {stage}"
    return NEXT_STAGE[stage], f"advanced: {summary}"
