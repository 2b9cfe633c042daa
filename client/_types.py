"""Result types of :class:`~qdrant_sift.client.SiftClient` (plain dataclasses, no torch)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AdaptResult", "Document", "ProgressCallback", "ProgressEvent", "StageTimings"]


@dataclass(frozen=True)
class Document:
    """A chunk picked for a prompt, in selection order.

    ``score`` is the recall similarity Qdrant reported (cosine; negative when it was recalled in the
    opposite direction). ``uncertainty`` is the model's posterior variance about the prompt *after*
    this pick (σ²_n): how much is left to learn, which falls with every informative pick.
    """

    id: str | int
    text: str
    score: float
    uncertainty: float | None = None
    rank: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of one call."""

    embed: float = 0.0
    recall: float = 0.0
    select: float = 0.0
    tune: float = 0.0
    generate: float = 0.0

    @property
    def total(self) -> float:
        return self.embed + self.recall + self.select + self.tune + self.generate


@dataclass(frozen=True)
class AdaptResult:
    """What :meth:`SiftClient.adapt_and_generate` did and produced.

    ``documents`` lists the picks in the order the adapter was trained on them (a chunk picked
    twice appears twice). ``base_model_only`` is true when no step was taken (``n=0``, or adaptive
    stopping judged the model certain enough) and ``reason`` says why.
    """

    text: str
    documents: list[Document]
    steps: int
    uncertainty_before: float
    uncertainty_after: float
    losses: list[float]
    timings: StageTimings
    stopped_early: bool = False
    base_model_only: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """One progress notification: ``stage`` is embed/recall/select/tune/generate."""

    stage: str
    step: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
