"""Brute-force float64 SIFT reference for the selector tests.

Deliberately the slow, obvious formula: at every step, for every candidate, solve
(K_S + λI)⁻¹ for the multiset S of picks plus that candidate and read the targets' total
posterior variance σ²_S = Σ_t k(q_t,q_t) − k_Sᵀ (K_S + λI)⁻¹ k_S. Nothing here shares code with
the product.
"""

from __future__ import annotations

import numpy as np

__all__ = ["brute_sift", "posterior_variance", "prepare"]


def prepare(X: np.ndarray, Q: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies, L2-normalised when asked (the kernel is the plain inner product after)."""
    X = np.asarray(X, np.float64)
    Q = np.atleast_2d(np.asarray(Q, np.float64))
    if normalize:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    return X, Q


def posterior_variance(X: np.ndarray, Q: np.ndarray, picks: list[int], lam: float) -> float:
    """Σ_t σ²(q_t | X[picks]) with noise λ (picks may repeat)."""
    prior = float(np.sum(Q * Q))
    if not picks:
        return prior
    XS = X[picks]
    A = XS @ XS.T + lam * np.eye(len(picks))
    KQ = XS @ Q.T
    return prior - float(np.trace(KQ.T @ np.linalg.solve(A, KQ)))


def brute_sift(
    X: np.ndarray,
    Q: np.ndarray,
    n: int,
    lam: float,
    *,
    unique: bool = False,
    normalize: bool = True,
    alpha: float | None = None,
) -> tuple[list[int], list[float], bool]:
    """Greedy by exhaustive search; ties → lowest index; alpha cuts at the first violation."""
    Xr, Qr = prepare(X, Q, normalize)
    picks: list[int] = []
    variances: list[float] = []
    for step in range(1, n + 1):
        best_j, best_v = -1, np.inf
        for j in range(Xr.shape[0]):
            if unique and j in picks:
                continue
            v = posterior_variance(Xr, Qr, [*picks, j], lam)
            if v < best_v:
                best_j, best_v = j, v
        if alpha is not None and alpha * step * np.sqrt(max(best_v, 0.0)) > 1.0:
            return picks, variances, True
        picks.append(best_j)
        variances.append(max(best_v, 0.0))
    return picks, variances, False


def test_reference_matches_closed_form_for_one_pick() -> None:
    """σ²(q | x) = 1 − ⟨x,q⟩²/(1+λ) for unit vectors: the reference's own sanity check."""
    rng = np.random.default_rng(0)
    X, Q = prepare(rng.standard_normal((5, 4)), rng.standard_normal(4), True)
    lam = 0.1
    for j in range(5):
        expected = 1.0 - float(X[j] @ Q[0]) ** 2 / (1.0 + lam)
        assert abs(posterior_variance(X, Q, [j], lam) - expected) < 1e-12
