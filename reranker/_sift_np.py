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

import importlib
import math
import os
import threading
from typing import Any

import numpy as np

from ._cancel import current_check

__all__ = ["GRAM_MAX_K", "GreedyResult", "compiled_available", "greedy_numpy", "use_gram"]

GRAM_MAX_K = 2048
_GRAM_K_PER_PICK = 6  # syrk's K²·d/2 beats n mat-vecs of K·d while K ≤ ~6n (measured)

GreedyResult = tuple[np.ndarray, np.ndarray, float, bool]


def use_gram(k: int, n: int) -> bool:
    """Whether the small-K Gram path is cheaper than one mat-vec per pick."""
    return 0 < k <= GRAM_MAX_K and k <= _GRAM_K_PER_PICK * max(n, 1)


# --- the compiled pick loop (optional: numba) -------------------------------------------------
#
# With numba importable (and QDRANT_SIFT_NUMBA not "0"), the Gram path's pick loop runs as one
# compiled function instead of ~10 numpy calls per pick, whose fixed cost (about 1 µs each) is
# most of a small selection: K=200, N=50, d=384 spends ~0.2 ms in the Gram product and ~0.6 ms
# in the numpy loop, ~0.1 ms in the compiled one. The arithmetic is the numpy loop's, written
# out (the rank-n correction is summed pick by pick instead of by a BLAS mat-vec, so σ² may
# differ in the last bits; ties still go to the lowest index). Compiled once per process and
# dtype on first use (about a second; cached on disk beside this file where writable).

_COMPILED_CHUNK = 16  # fewest picks per compiled call: cancellation is checked between calls
_COMPILED_CHUNK_WORK = 1 << 22  # multiply-adds of one call's rank-n corrections, at most ~4 M
_compiled_lock = threading.Lock()
_compiled_fn: Any = None
_compiled_state = "unknown"  # "unknown" | "ready" | "uncached" | "off"


def _steps_py(
    GT: Any, lamj: Any, ts: Any, C: Any, dl: Any, W: Any, picks: Any, variances: Any,
    pen: Any, order: Any, tvs: Any, i0: int, i1: int, var_scale: float, alpha: float,
    has_alpha: bool,
) -> tuple[int, bool]:  # fmt: skip
    """Picks ``i0``..``i1`` of the greedy, state in place (the numpy loop below, unrolled).

    Returns (picks taken, stopped by ``alpha``). ``pen``/``order`` of length 0 mean none.
    """
    K = dl.shape[0]
    m = C.shape[0]
    width = K + m
    use_pen = pen.shape[0] > 0
    given = order.shape[0] > 0
    for i in range(i0, i1):
        if given:
            j = order[i]
        else:
            j = 0
            best = 0.0
            for k in range(K):
                g = 0.0
                for t in range(m):
                    g += C[t, k] * C[t, k]
                g /= dl[k]
                if use_pen:
                    g += pen[k]
                if k == 0 or g > best:  # the first maximum, like argmax
                    best = g
                    j = k
        w = W[i]
        for k in range(K):
            w[k] = GT[j, k]
        for t in range(m):
            w[K + t] = GT[j, K + t] * ts[t]
        for ii in range(i):
            a = W[ii, j]
            for k in range(width):
                w[k] -= a * W[ii, k]
        lj = lamj[j]
        s = w[j] + lj
        if s < lj:
            s = lj
        inv = 1.0 / math.sqrt(s)
        for k in range(width):
            w[k] *= inv
        for k in range(K):
            dl[k] -= w[k] * w[k]
        tv = tvs[0]
        for t in range(m):
            wt = w[K + t]
            for k in range(K):
                C[t, k] -= wt * w[k]
            tv -= wt * wt
        tvs[0] = tv
        var = tv * var_scale
        if var < 0.0:
            var = 0.0
        if has_alpha and alpha * (i + 1) * math.sqrt(var) > 1.0:
            return i, True
        picks[i] = j
        variances[i] = var
        if use_pen:
            pen[j] = -np.inf
    return i1, False


def _switched_off() -> bool:
    return os.environ.get("QDRANT_SIFT_NUMBA", "1").strip().lower() in ("0", "false", "no", "off")


def _numba() -> Any:
    """The numba module, or None when it is not installed or switched off."""
    if _switched_off():
        return None
    try:
        return importlib.import_module("numba")
    except Exception:  # not installed, or unusable with this numpy
        return None


def compiled_available() -> bool:
    """Whether the compiled pick loop can be used (numba importable and not switched off)."""
    return _compiled_state != "off" and _numba() is not None


def _compiled_steps() -> Any:
    """The compiled :func:`_steps_py`, or None (numba missing, switched off, or it failed)."""
    global _compiled_fn, _compiled_state
    if _switched_off():  # checked per call, and it leaves the state alone: a switch, not a verdict
        return None
    if _compiled_state in ("ready", "uncached"):
        return _compiled_fn
    if _compiled_state == "off":
        return None
    with _compiled_lock:
        if _compiled_state == "unknown":
            nb = _numba()
            try:
                _compiled_fn = None if nb is None else nb.njit(cache=True, nogil=True)(_steps_py)
            except Exception:
                _compiled_fn = None
            _compiled_state = "ready" if _compiled_fn is not None else "off"
    return _compiled_fn


def _run_compiled(
    fn: Any, GT: np.ndarray, lamj: np.ndarray, ts: np.ndarray, C: np.ndarray, dl: np.ndarray,
    steps: int, pen: np.ndarray | None, order: np.ndarray | None, tv: float, var_scale: float,
    alpha: float | None, stop: Any,
) -> tuple[np.ndarray, np.ndarray, bool] | None:  # fmt: skip
    """The whole pick loop compiled, in chunks; None if the compiled call fails (then the
    caller runs the numpy loop on the untouched inputs: the state here is copies)."""
    global _compiled_fn, _compiled_state
    W = np.empty((steps, GT.shape[1]))
    picks = np.empty(steps, np.int64)
    variances = np.empty(steps)
    pen_a = np.zeros(0) if pen is None else pen.copy()
    order_a = np.zeros(0, np.int64) if order is None else np.ascontiguousarray(order, np.int64)
    args = (np.ascontiguousarray(GT), lamj, ts, np.array(C, order="C"), dl.copy(), W, picks,
            variances, pen_a, order_a, np.array([tv]))  # fmt: skip
    # one call for a small selection (each call costs ~10 µs of argument checks); calls of a
    # few milliseconds for a large one, so that cancellation still stops it promptly
    chunk = max(_COMPILED_CHUNK, _COMPILED_CHUNK_WORK // (GT.shape[1] * steps))
    done = 0
    while done < steps:
        if stop is not None:
            stop()
        hi = min(steps, done + chunk)
        try:
            taken, hit = fn(*args, done, hi, var_scale, alpha or 0.0, alpha is not None)
        except Exception:
            with _compiled_lock:
                nb = _numba()
                if _compiled_state == "ready" and done == 0 and nb is not None:
                    # an unreadable on-disk cache (numba's, beside this file): compile afresh
                    _compiled_state = "uncached"
                    _compiled_fn = nb.njit(nogil=True)(_steps_py)
                else:  # a numba that cannot compile this: numpy from now on
                    _compiled_state = "off"
            if _compiled_state == "off":
                return None
            fn = _compiled_fn
            continue
        if hit:
            return picks[:taken].copy(), variances[:taken].copy(), True
        done = hi
    return picks, variances, False


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
    compiled: bool | None = None,
) -> GreedyResult:
    """Run (or, with ``order``, replay) the greedy and return (indices, σ²ₙ, σ²₀, stopped).

    ``X`` (K, d) and ``Q`` (m, d) are raw vectors in the compute dtype, ``sqx``/``sqq`` their
    float64 squared norms (already checked finite and, if ``normalize``, non-zero). With
    ``order`` the picks are given (baselines) and only the posterior variances are computed.
    ``compiled``: the Gram path's compiled pick loop (None: when available; False: numpy).
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

    pen = np.zeros(K) if unique and order is None else None
    fn = _compiled_steps() if GT is not None and compiled is not False else None
    if fn is not None and GT is not None:
        ts = np.ones(1) if single else rq
        got = _run_compiled(fn, GT, lamj, ts, C, dl, steps, pen, order, tv, var_scale, alpha, stop)
        if got is not None:
            return got[0], got[1], prior, got[2]

    W = np.empty((steps, K + m))
    picks = np.empty(steps, np.int64)
    variances = np.empty(steps)
    gain = np.empty(K)
    tmp = np.empty(K)
    corr = np.empty(K + m)
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
