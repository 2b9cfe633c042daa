"""Exact greedy SIFT for one prompt on the CPU (numpy), the latency-critical path.

State, with points P = [candidates; targets] and Σ the posterior covariance over P:

* ``W`` (n × (K+m)): rows wᵢ = Σᵢ₋₁[:, jᵢ] / √(Σᵢ₋₁[jᵢ,jᵢ] + λ), so that
  Σₙ = Σ₀ − Σᵢ wᵢ wᵢᵀ without ever storing Σ;
* ``dl`` (K): Σ[j,j] + λ for every candidate, ``C`` (m × K): Σ[t,j], and the target variance sum.

Candidates stay raw, as in :mod:`._sift_batch`: with r_j = 1/‖x_j‖, conditioning the normalised
kernel on x_j with noise λ equals conditioning the raw kernel with noise λ_j = λ‖x_j‖², so the
gain Σₜ Σ[t,j]²/(Σ[j,j]+λ) reads Σₜ Σ̃[t,j]²/(Σ̃[j,j]+λ_j) over raw candidates (Σ̃): the same
numbers up to float64 rounding, and no scaled copy of the K×K Gram block. A single target is
kept raw as well (its weight 1/‖q‖² scales every gain alike and only rescales σ²); several
targets are normalised so that they weigh alike.

One pick costs one kernel column (K·d), its rank-n correction (n·(K+m)) and O(m·K) updates, so
memory is O(K·(n+m)) beside the input. For small K (``K ≤ GRAM_MAX_K`` and K small relative to
n) the kernel columns come from one symmetric Gram product (BLAS syrk, written straight into a
[candidates | targets] block in the compute dtype; rows are cast to float64 as they are read)
instead of n mat-vecs: the same numbers, fewer passes. The kernel products run in the caller's
dtype (float32 by default); everything after them is float64, so float32 only adds the rounding
of the inner products themselves.

Ties: ``argmax`` returns the first maximum, i.e. the lowest index among equal computed gains.
"""

from __future__ import annotations

import math

import numpy as np

from ._cancel import current_check

__all__ = ["GRAM_MAX_K", "GreedyResult", "greedy_numpy", "use_gram"]

GRAM_MAX_K = 2048
_GRAM_K_PER_PICK = 6  # syrk's K²·d/2 beats n mat-vecs of K·d while K ≤ ~6n (measured)

GreedyResult = tuple[np.ndarray, np.ndarray, float, bool]


def use_gram(k: int, n: int) -> bool:
    """Whether the small-K Gram path is cheaper than one mat-vec per pick."""
    return 0 < k <= GRAM_MAX_K and k <= _GRAM_K_PER_PICK * max(n, 1)


def _empty(prior: float) -> GreedyResult:
    return np.zeros(0, np.int64), np.zeros(0, np.float64), prior, False


def greedy_numpy(
    X: np.ndarray,
    sqx: np.ndarray,
    Q: np.ndarray,
    sqq: np.ndarray,
    *,
    n: int,
    lam: float,
    normalize: bool,
    unique: bool = False,
    alpha: float | None = None,
    order: np.ndarray | None = None,
    gram: bool | None = None,
) -> GreedyResult:
    """Run (or, with ``order``, replay) the greedy and return (indices, σ²ₙ, σ²₀, stopped).

    ``X`` (K, d) and ``Q`` (m, d) are raw vectors in the compute dtype, ``sqx``/``sqq`` their
    float64 squared norms (already checked finite and, if ``normalize``, non-zero). With
    ``order`` the picks are given (baselines) and only the posterior variances are computed.
    """
    K, m = X.shape[0], Q.shape[0]
    prior = float(m) if normalize else float(sqq.sum())
    steps = n if order is None else len(order)
    if steps == 0 or K == 0:
        return _empty(prior)
    stop = current_check()  # cancellation (gRPC calls): checked before the Gram and every pick
    if stop is not None:
        stop()
    if gram is None:
        gram = use_gram(K, steps)
    # raw candidates, noise λ_j (module docstring); targets' weights rq² (1 without normalize)
    lamj = sqx * lam if normalize else np.full(K, lam)
    rq2 = 1.0 / sqq if normalize else np.ones(m)
    single = m == 1

    # Kernel rows [k̃(x_j, X) | k(x_j, Q)], raw, in the compute dtype: all K at once (Gram
    # path: syrk into the left block, no float64 copy; rows are cast as they are read) or per pick.
    GT = None
    if gram:
        GT = np.empty((K, K + m), X.dtype)
        np.matmul(X, X.T, out=GT[:, :K])
        np.matmul(X, Q.T, out=GT[:, K:])
        dl = np.add(np.diagonal(GT), lamj)  # Σ̃[j,j] + λ_j (float64: lamj is)
        C = GT[:, K:].T.astype(np.float64)  # own memory: C is updated in place
    else:
        dl = sqx + lamj
        C = (Q @ X.T).astype(np.float64)
    tv = float(sqq.sum())  # raw; σ² = Σₜ rq²ₜ·(raw variance of t) is tracked in ``var``
    var_scale = float(rq2[0]) if single else 1.0
    if not single:
        rq = np.sqrt(rq2)
        C *= rq[:, None]  # multi-target state is kept normalised: gains weigh targets alike
        tv = prior

    W = np.empty((steps, K + m))
    picks = np.empty(steps, np.int64)
    variances = np.empty(steps)
    gain = np.empty(K)
    tmp = np.empty(K)
    corr = np.empty(K + m)
    pen = np.zeros(K) if unique and order is None else None
    c = C[0]
    stopped = False
    taken = steps
    for i in range(steps):
        if stop is not None:
            stop()
        if order is None:
            if single:
                np.multiply(c, c, out=gain)
            else:
                np.einsum("tk,tk->k", C, C, out=gain)
            np.divide(gain, dl, out=gain)
            if pen is not None:
                gain += pen
            j = int(gain.argmax())
        else:
            j = int(order[i])
        w = W[i]
        if GT is not None:
            row = GT[j]
        else:
            xj = X[j]
            row = np.concatenate((X @ xj, Q @ xj))
        if not single:  # normalised targets (the single target stays raw)
            row = row.astype(np.float64)
            row[K:] *= rq
        if i:
            np.matmul(W[:i, j], W[:i], out=corr)
            np.subtract(row, corr, out=w)
        else:
            w[:] = row
        lj = float(lamj[j])
        s = float(w[j]) + lj
        if s < lj:  # Σ̃[j,j] ≥ 0 in exact arithmetic; clip rounding below zero
            s = lj
        w *= 1.0 / math.sqrt(s)
        wc = w[:K]
        np.multiply(wc, wc, out=tmp)
        dl -= tmp
        if single:
            wt0 = float(w[K])
            np.multiply(wc, wt0, out=tmp)
            c -= tmp
            tv -= wt0 * wt0
        else:
            wt = w[K:]
            C -= np.outer(wt, wc)
            tv -= float(wt @ wt)
        var = tv * var_scale
        if var < 0.0:
            var = 0.0
        if alpha is not None and alpha * (i + 1) * math.sqrt(var) > 1.0:
            stopped, taken = True, i
            break
        picks[i] = j
        variances[i] = var
        if pen is not None:
            pen[j] = -np.inf
    return picks[:taken].copy(), variances[:taken].copy(), prior, stopped
