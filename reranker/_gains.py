"""The one gain formula: how much of the prompt's prior uncertainty each pick removed.

``rerank()``, the RAG adapters and :class:`~qdrant_sift.reranker.Selection` report a pick's
score as (σ²ₙ₋₁ − σ²ₙ) / σ²₀ — its share of the prior variance σ²₀, given the picks before it.
Torch-free, so the client side can import it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["relative_gains"]


def relative_gains(variances: Iterable[float], prior: float) -> list[float]:
    """Per-pick gains (σ²ₙ₋₁ − σ²ₙ) / σ²₀ from the posterior variances σ²ₙ in pick order.

    Floored at 0 (float rounding can raise σ² by an ulp), all 0 when σ²₀ ≤ 0; a NaN variance
    (unknown) gives NaN for that pick and the next. In [0, 1], summing to at most 1.
    """
    gains: list[float] = []
    previous = float(prior)
    for variance in variances:
        v = float(variance)
        gains.append(max((previous - v) / prior, 0.0) if prior > 0 else 0.0)
        previous = v
    return gains
