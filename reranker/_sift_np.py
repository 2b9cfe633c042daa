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

from . import _scratch as scratch
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
# differ in the last bits; ties still go to the lowest index). The state set-up after the Gram
# product (λ_j, dl, C, the target weights) runs in the same call, in one float64 buffer: each
# numpy call it replaces costs ~1 µs warm and tens of µs when another process has just evicted
# the caches (measured on the shared 2-core machine, where that is the common case). Compiled
# once per process and dtype on first use (about a second; cached on disk beside this file
# where writable).

_COMPILED_CHUNK_WORK = 1 << 22  # multiply-adds of one call's rank-n corrections: ~4 M (or one pick)
_compiled_lock = threading.Lock()
_compiled_fn: Any = None
_compiled_state = "unknown"  # "unknown" | "ready" | "uncached" | "off"
_NO_ORDER = np.zeros(0, np.int64)  # "no given order" for the compiled loop (never written)


def _layout(k: int, m: int, steps: int) -> tuple[int, int, int, int, int, int, int, int]:
    """Offsets of the compiled loop's state in its one float64 buffer: W (steps × (K+m)) | dl |
    λ_j | pen | C (m × K) | target weights (m) | σ² (steps) | raw target variance (1); size."""
    dl = steps * (k + m)
    lamj = dl + k
    pen = lamj + k
    c = pen + k
    ts = c + m * k
    var = ts + m
    tv = var + steps
    return dl, lamj, pen, c, ts, var, tv, tv + 1


def _steps_py(
    GT: Any, sqx: Any, sqq: Any, lam: float, normalize: bool, unique: bool, prior: float,
    order: Any, buf: Any, lay: Any, picks: Any, i0: int, i1: int, alpha: float, has_alpha: bool,
) -> tuple[int, bool]:  # fmt: skip
    """Picks ``i0``..``i1`` of the greedy (the numpy loop below, unrolled), state in ``buf``.

    One call sets up the state from the Gram block ``GT`` (when ``i0 == 0``) and runs the picks,
    so a small selection is one compiled call instead of ~20 numpy calls around it (each one
    costs ~1 µs warm and tens of µs when the caches are cold). ``lay`` is :func:`_layout`'s tuple
    for this call (computed by the caller: a compiled function calls no Python). Returns (picks
    taken, stopped by ``alpha``); ``order`` of length 0 means none. The σ² of pick i is
    ``buf[var + i]``.
    """
    K = GT.shape[0]
    m = GT.shape[1] - K
    width = K + m
    steps = picks.shape[0]
    o_dl, o_lamj, o_pen, o_c, o_ts, o_var, o_tv, _ = lay
    W = buf[: steps * width].reshape(steps, width)
    dl = buf[o_dl : o_dl + K]
    lamj = buf[o_lamj : o_lamj + K]
    pen = buf[o_pen : o_pen + K]
    C = buf[o_c : o_c + m * K].reshape(m, K)
    ts = buf[o_ts : o_ts + m]
    variances = buf[o_var : o_var + steps]
    single = m == 1
    given = order.shape[0] > 0
    use_pen = unique and not given
    # σ² = tv · var_scale; the single target stays raw (its weight rescales every gain alike)
    var_scale = (1.0 / sqq[0] if normalize else 1.0) if single else 1.0
    if i0 == 0:  # the numpy loop's set-up, the same numbers
        for k in range(K):
            lamj[k] = sqx[k] * lam if normalize else lam
            dl[k] = np.float64(GT[k, k]) + lamj[k]
            pen[k] = 0.0
        for t in range(m):
            ts[t] = 1.0 if single or not normalize else math.sqrt(1.0 / sqq[t])
            for k in range(K):
                C[t, k] = np.float64(GT[k, K + t]) * ts[t] if not single else GT[k, K + t]
        buf[o_tv] = sqq[0] if single else prior
    tv = buf[o_tv]
    for i in range(i0, i1):
        if given:
            j = order[i]
        else:
            gain = W[i]  # scratch: this pick's row is written after the argmax
            for k in range(K):
                gain[k] = C[0, k] * C[0, k]
            for t in range(1, m):
                for k in range(K):
                    gain[k] += C[t, k] * C[t, k]
            for k in range(K):  # vectorised divisions, then the scalar argmax
                gain[k] /= dl[k]
            if use_pen:
                for k in range(K):
                    gain[k] += pen[k]
            j = 0
            best = gain[0]
            for k in range(1, K):
                if gain[k] > best:  # the first maximum, like argmax
                    best = gain[k]
                    j = k
        w = W[i]
        for k in range(K):
            w[k] = GT[j, k]
        for t in range(m):
            w[K + t] = GT[j, K + t] * ts[t]
        # rank-n correction w -= Σ_ii W[ii, j]·W[ii], the rows subtracted one after another as
        # before, four per pass over w (each element sees the same operations in the same
        # order, so the same bits; a quarter of the loads and stores of w: -14 % at N = 50)
        ii = 0
        while ii + 4 <= i:
            a0, a1, a2, a3 = W[ii, j], W[ii + 1, j], W[ii + 2, j], W[ii + 3, j]
            r0, r1, r2, r3 = W[ii], W[ii + 1], W[ii + 2], W[ii + 3]
            for k in range(width):
                w[k] = (((w[k] - a0 * r0[k]) - a1 * r1[k]) - a2 * r2[k]) - a3 * r3[k]
            ii += 4
        for rest in range(ii, i):
            a = W[rest, j]
            for k in range(width):
                w[k] -= a * W[rest, k]
        lj = lamj[j]
        s = w[j] + lj
        if s < lj:
            s = lj
        inv = 1.0 / math.sqrt(s)
        for k in range(width):
            w[k] *= inv
        for k in range(K):
            dl[k] -= w[k] * w[k]
        for t in range(m):
            wt = w[K + t]
            for k in range(K):
                C[t, k] -= wt * w[k]
            tv -= wt * wt
        buf[o_tv] = tv
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


def _chunk_end(done: int, steps: int, width: int) -> int:
    """End of the next compiled call's picks: pick i's rank-n correction costs i·width
    multiply-adds, so picks done..hi cost width·(hi² − done²)/2; keep that near
    ``_COMPILED_CHUNK_WORK`` (a few ms), at least one pick.

    One call for a small selection (each call costs ~10 µs of argument checks); for a large one
    calls of a few milliseconds however far it has got, so cancellation stops it promptly (the
    former floor of 16 picks a call was ~320 M multiply-adds a call late in an N = 10k, K = 2k
    selection, and grew without bound with N and K).
    """
    hi = math.isqrt(done * done + 2 * _COMPILED_CHUNK_WORK // max(width, 1))
    return min(steps, max(hi, done + 1))


def _run_compiled(
    fn: Any, GT: np.ndarray, sqx: np.ndarray, sqq: np.ndarray, lam: float, normalize: bool,
    unique: bool, prior: float, steps: int, order: np.ndarray | None, alpha: float | None,
    stop: Any, lay: tuple[int, ...] | None = None, buf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool] | None:  # fmt: skip
    """The whole greedy after the Gram block, compiled, in chunks; None if the compiled call
    fails (then the caller runs the numpy loop: the inputs are untouched, the state is ``buf``,
    :func:`_layout`'s size of float64 scratch, allocated here unless given)."""
    global _compiled_fn, _compiled_state
    K, width = GT.shape
    lay = _layout(K, width - K, steps) if lay is None else lay
    buf = np.empty(lay[-1]) if buf is None else buf
    picks = np.empty(steps, np.int64)
    order_a = _NO_ORDER if order is None else np.ascontiguousarray(order, np.int64)
    done, taken, hit = 0, steps, False
    while done < steps and not hit:
        if stop is not None:
            stop()
        hi = _chunk_end(done, steps, width)
        try:
            taken, hit = fn(GT, sqx, sqq, lam, normalize, unique, prior, order_a, buf, lay, picks,
                            done, hi, alpha or 0.0, alpha is not None)  # fmt: skip
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
        done = hi
    var0 = lay[5]
    return picks[:taken], buf[var0 : var0 + taken].copy(), hit  # picks: this call's own array


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
    # Kernel rows [k̃(x_j, X) | k(x_j, Q)], raw, in the compute dtype: all K at once (Gram
    # path: syrk into the left block, no float64 copy; rows are cast as they are read) or per pick.
    GT = None
    if gram:
        fn = _compiled_steps() if compiled is not False else None
        lay = _layout(K, m, steps)
        # the compiled loop's Gram block and state: reused, fork-proof memory (_scratch)
        region, GT, buf = scratch.arrays(X.dtype, K, K + m, 0 if fn is None else lay[-1])
        try:
            np.matmul(X, X.T, out=GT[:, :K])
            np.matmul(X, Q.T, out=GT[:, K:])
            if fn is not None:
                got = _run_compiled(fn, GT, sqx, sqq, lam, normalize, unique, prior, steps,
                                    order, alpha, stop, lay, buf)  # fmt: skip
                if got is not None:
                    return got[0], got[1], prior, got[2]
            GT = GT if region is None else GT.copy()  # the numpy loop outlives the region
        finally:
            scratch.give(region)
    # raw candidates, noise λ_j (module docstring); targets' weights rq² (1 without normalize)
    lamj = sqx * lam if normalize else np.full(K, lam)
    rq2 = 1.0 / sqq if normalize else np.ones(m)
    single = m == 1
    if GT is not None:
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
