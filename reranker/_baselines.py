"""Pick orders of the baseline strategies: ``nearest``, ``mmr`` and ``random``.

They use SIFT's kernel (cosine, or the raw inner product with ``normalize=False``), so their
relevance is the mean kernel value to the targets, and their posterior variances (computed by
the SIFT engine replaying these orders) compare all strategies on SIFT's own objective. Each is a
ranking, so picks are always distinct and ``n`` may not exceed K.
"""

from __future__ import annotations

import numpy as np

from ._cancel import current_check

__all__ = ["baseline_order", "relevance"]


def _inv_norms(sq: np.ndarray, normalize: bool) -> np.ndarray:
    return 1.0 / np.sqrt(sq) if normalize else np.ones_like(sq)


def relevance(
    X: np.ndarray, sqx: np.ndarray, Q: np.ndarray, sqq: np.ndarray, normalize: bool
) -> np.ndarray:
    """Mean kernel value of every candidate to the targets (float64, shape (K,))."""
    rx = _inv_norms(sqx, normalize)
    rq = _inv_norms(sqq, normalize)
    return ((X @ Q.T).astype(np.float64) @ rq) * rx / Q.shape[0]


def _nearest(rel: np.ndarray, n: int) -> np.ndarray:
    # stable sort on the negated score: ties keep the lowest index first
    return np.argsort(-rel, kind="stable")[:n].astype(np.int64)


def _mmr(
    X: np.ndarray, sqx: np.ndarray, rel: np.ndarray, n: int, diversity: float, normalize: bool
) -> np.ndarray:
    """Maximal marginal relevance: (1−diversity)·relevance − diversity·max similarity to picks.

    Same meaning as Qdrant's ``Mmr(diversity=…)``: 0 is pure relevance, 1 pure diversity.
    """
    K = X.shape[0]
    rx = _inv_norms(sqx, normalize)
    max_sim = np.full(K, -np.inf)
    picked = np.zeros(K, bool)
    order = np.empty(n, np.int64)
    score = np.empty(K)
    stop = current_check()
    for i in range(n):
        if stop is not None:
            stop()
        if i == 0:
            score[:] = rel
        else:
            np.multiply(max_sim, -diversity, out=score)
            score += (1.0 - diversity) * rel
        score[picked] = -np.inf
        j = int(score.argmax())
        order[i] = j
        picked[j] = True
        sim = (X @ X[j]).astype(np.float64) * rx * rx[j]
        np.maximum(max_sim, sim, out=max_sim)
    return order


def baseline_order(
    strategy: str,
    X: np.ndarray,
    sqx: np.ndarray,
    Q: np.ndarray,
    sqq: np.ndarray,
    n: int,
    *,
    normalize: bool,
    diversity: float,
    seed: int | None,
) -> np.ndarray:
    """The pick order (int64, length ``n`` ≤ K) of a baseline strategy."""
    K = X.shape[0]
    if n == 0 or K == 0:
        return np.zeros(0, np.int64)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return rng.permutation(K)[:n].astype(np.int64)
    rel = relevance(X, sqx, Q, sqq, normalize)
    if strategy == "nearest":
        return _nearest(rel, n)
    if strategy == "mmr":
        return _mmr(X, sqx, rel, n, diversity, normalize)
    raise AssertionError(f"not a baseline strategy: {strategy}")  # validated before
