"""Pick orders of the baseline strategies: ``nearest``, ``mmr`` and ``random``.

They use SIFT's kernel (cosine, or the raw inner product with ``normalize=False``), so their
relevance is the mean kernel value to the targets, and their posterior variances (computed by
the SIFT engine replaying these orders) compare all strategies on SIFT's own objective. Each is a
ranking, so picks are always distinct and ``n`` may not exceed K.
"""

from __future__ import annotations

import numpy as np

from ._cancel import current_check

__all__ = ["REPLAY_MAX_N", "baseline_order", "relevance", "replay_variances"]

#: Largest pick count the Cholesky replay handles (its n×n factor); beyond it the caller replays
#: through the greedy engine. The factor costs n²·d + n³/3, never more than the greedy's n·K·d.
REPLAY_MAX_N = 2048


def _inv_norms(sq: np.ndarray, normalize: bool) -> np.ndarray:
    return 1.0 / np.sqrt(sq) if normalize else np.ones_like(sq)


def relevance(
    X: np.ndarray, sqx: np.ndarray, Q: np.ndarray, sqq: np.ndarray, normalize: bool
) -> np.ndarray:
    """Mean kernel value of every candidate to the targets (float64, shape (K,))."""
    rx = _inv_norms(sqx, normalize)
    rq = _inv_norms(sqq, normalize)
    mean: np.ndarray = ((X @ Q.T).astype(np.float64) @ rq) * rx / Q.shape[0]
    return mean


def _nearest(rel: np.ndarray, n: int) -> np.ndarray:
    """Top n by relevance, ties to the lowest index: the stable sort's order, in O(K + n log n)."""
    K = rel.size
    if n * 8 >= K:
        return np.argsort(-rel, kind="stable")[:n].astype(np.int64)
    thr = np.partition(rel, K - n)[K - n]  # the n-th largest value
    above = np.flatnonzero(rel > thr)
    ties = np.flatnonzero(rel == thr)[: n - above.size]  # lowest indices first, as a stable sort
    top = np.concatenate([above, ties])
    return top[np.argsort(-rel[top], kind="stable")].astype(np.int64)


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


def replay_variances(
    X: np.ndarray,
    sqx: np.ndarray,
    Q: np.ndarray,
    sqq: np.ndarray,
    order: np.ndarray,
    *,
    lam: float,
    normalize: bool,
) -> np.ndarray | None:
    """σ²ᵢ after each prefix of a fixed pick ``order`` of distinct candidates, in O(n²·d + n³).

    The targets' posterior variance after picks S is tr K_QQ − tr(K_QS (K_SS + λI)⁻¹ K_SQ). With
    the Cholesky factor L of K_SS + λI and Z = L⁻¹ K_SQ, the reduction after the first i picks
    is the squared norm of Z's first i rows (a Cholesky factor of a leading block is the leading
    block of the factor), so one factorisation gives every prefix. Same numbers as replaying
    the greedy, which touches all K candidates per pick; the kernel products run in ``X``'s
    dtype, the rest in float64, as there. Returns None when the factorisation fails (λ tiny
    against duplicate picks); the caller then replays through the engine, which clips.
    """
    stop = current_check()
    if stop is not None:
        stop()
    n = order.size
    rx = 1.0 / np.sqrt(sqx[order]) if normalize else np.ones(n)
    rq = 1.0 / np.sqrt(sqq) if normalize else np.ones(Q.shape[0])
    XS = X[order]
    A = (XS @ XS.T).astype(np.float64) * rx[:, None] * rx[None, :]
    A[np.diag_indices(n)] += lam
    B = (XS @ Q.T).astype(np.float64) * rx[:, None] * rq[None, :]
    try:
        L = np.linalg.cholesky(A)
        Z = np.linalg.solve(L, B)
    except np.linalg.LinAlgError:
        return None
    prior = float(Q.shape[0]) if normalize else float(sqq.sum())
    out = prior - np.cumsum(np.einsum("ij,ij->i", Z, Z))
    return np.maximum(out, 0.0)
