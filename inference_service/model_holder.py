"""The model a process serves, swapped atomically (and the candidate in rollout beside it).

A request reads `holder.current` once and uses that object to the end, so a
swap never changes the model under a request in flight, and no request ever
sees a half-loaded one: `LoadedModel` is complete and immutable before it is
published by a single reference assignment. `holder.candidate` (a shadow or
canary model, inference_service.rollout) is published the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tagloop.domain.model import TagModel

if TYPE_CHECKING:
    from inference_service.rollout import Candidate


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up model with what the API reports about it."""

    model: TagModel
    version: str
    metadata: dict[str, Any]
    loaded_at: str
    """RFC 3339 time the model was swapped in."""
    loaded_at_unix: float
    tags: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", self.model.classes_.tolist())

    @property
    def metrics(self) -> dict[str, Any]:
        metrics = self.metadata.get("metrics")
        return metrics if isinstance(metrics, dict) else {}


class ModelHolder:
    """One reference to the served model; writers serialise on a lock, readers never wait."""

    def __init__(self) -> None:
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()
        self.candidate: Candidate | None = None
        """The rollout's candidate, if one runs beside the served model; only the loader
        thread assigns it."""

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def swap(self, loaded: LoadedModel) -> LoadedModel | None:
        """Serve `loaded` from now on; returns the model it replaced."""
        with self._lock:
            previous, self._current = self._current, loaded
        return previous
