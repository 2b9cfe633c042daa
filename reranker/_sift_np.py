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
memory is O(K·(n+m)) beside the input. Where the columns come from (:func:`_kernel_path`):

* with the compiled loop (:mod:`._sift_compiled`, numba) and ``K ≤ GRAM_MAX_K``, all of the
  greedy is one compiled call: for n ≤ K/2 it computes each pick's kernel row itself (n·K·d
  multiply-adds, at most the Gram product's K²·d/2), else it reads them from the Gram block;
* otherwise (numpy loop) from one symmetric Gram product for small K (``K ≤ GRAM_MAX_K`` and K
  small relative to n: BLAS syrk, written straight into a [candidates | targets] block in the
  compute dtype; rows are cast to float64 as they are read), or from one mat-vec per pick.

The kernel products run in the caller's dtype (float32 by default); everything after them is
float64, so float32 only adds the rounding of the inner products themselves (each path sums
them in an order of its own, so paths may differ in the last float32 bits of a product).

Ties: ``argmax`` returns the first maximum, i.e. the lowest index among equal computed gains.
"""

from __future__ import annotations

import math

import numpy as np

from qdrant_sift.arrays import CACHE_LINE, aligned_empty

from . import _scratch as scratch
from . import _sift_compiled as compiled_loop
from . import _sift_once as one_call
from ._cancel import current_check
from ._sift_compiled import compiled_available

__all__ = [
    "GRAM_MAX_K",
    "ONCE_WORK",
    "GreedyResult",
    "aligned_input",
    "compiled_covers",
    "greedy_numpy",
    "greedy_once",
    "use_gram",
]

GRAM_MAX_K = 2048
_GRAM_K_PER_PICK = 6  # syrk's K²·d/2 beats n mat-vecs of K·d while K ≤ ~6n (measured)

#: multiply-adds (kernel rows + rank-n correction) of the largest selection made as one
#: compiled call (:func:`greedy_once`): ~0.5 ms here, so cancellation waits no longer than that;
#: larger ones run in :data:`._sift_compiled.CHUNK_WORK` chunks, a check before each
ONCE_WORK = 1 << 24

_F32 = np.dtype(np.float32)

GreedyResult = tuple[np.ndarray, np.ndarray, float, bool]


def use_gram(k: int, n: int) -> bool:
    """Whether the small-K Gram path is cheaper than one mat-vec per pick."""
    return 0 < k <= GRAM_MAX_K and k <= _GRAM_K_PER_PICK * max(n, 1)


def compiled_covers(k: int) -> bool:
    """Whether a selection from ``k`` candidates runs as one compiled call (kernel rows or Gram
    block): numba is available and ``0 < k ≤ GRAM_MAX_K``. Beyond that, X outgrows the caches
    and the numpy loop's BLAS mat-vec per pick, on the threads a large selection leaves BLAS,
    reads it faster (K = 10,000, N = 50, d = 768 on 2 cores: 13.4 ms against 28–31 ms compiled;
    on one BLAS thread the compiled rows would win, 28 against 45 ms)."""
    return 0 < k <= GRAM_MAX_K and compiled_available()


def _kernel_path(k: int, steps: int, gram: bool | None, fn: object) -> str:
    """Where the kernel rows come from: ``rows`` (the compiled loop computes each pick's row),
    ``gram`` (the syrk block) or ``matvec`` (numpy mat-vec per pick); ``gram`` True forces the
    Gram block, False per-pick rows."""
    if fn is not None and 0 < k <= GRAM_MAX_K:
        if gram is None:  # n ≤ K/2 picks need at most n rows: at most syrk's K²·d/2
            gram = 2 * steps > k
        return "gram" if gram else "rows"
    if gram is None:
        gram = use_gram(k, steps)
    return "gram" if gram else "matvec"


def _compiled_rows(
    fn: object, X: np.ndarray, sqx: np.ndarray, Q: np.ndarray, sqq: np.ndarray, lam: float,
    normalize: bool, unique: bool, prior: float, steps: int, order: np.ndarray | None,
    alpha: float | None, stop: object, table: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool] | None:  # fmt: skip
    """The compiled loop computing its own kernel rows (or reading them from ``table``); its
    state in pooled scratch.

    X is read once per pick, so its alignment matters: rows whose vector loads straddle cache
    lines (numpy's large arrays start 16 bytes into a page) cost ~1.5× (K=200, N=50: 0.145
    against 0.094 ms at d=384). A misaligned X is copied into the page-aligned pooled region
    first (~7 µs at d=384); the products are the same bits either way (the sum's order is
    fixed by the code, not by where X lies).
    """
    K, d = X.shape
    size = compiled_loop.layout(K, Q.shape[0], steps)[-1]
    aligned = table is not None or _is_aligned(X)  # with a table, X serves m products only
    region, block, buf = scratch.arrays(X.dtype, 0 if aligned else K, d, size)
    try:
        if region is not None and not aligned:
            np.copyto(block, X)
            X = block
        rows = np.empty((0, 0), X.dtype) if table is None else table
        return compiled_loop.run_compiled(fn, rows, _compiled_input(X), _compiled_input(Q),
                                          sqx, sqq, lam, normalize, unique, prior, steps, order,
                                          alpha, stop, buf)  # fmt: skip
    finally:
        scratch.give(region)


def greedy_once(
    query: object, candidates: object, n: int, lam: float, normalize: bool, unique: bool,
    alpha: float | None,
) -> GreedyResult | None:  # fmt: skip
    """The common selection as one compiled call (checks, set-up, picks), or None when it is
    not one; then the caller takes the general route, whose checks raise for bad input.

    One call takes float32 numpy inputs, C-contiguous (read-only ones, such as a decoded gRPC
    message, are copied into its scratch, as a misaligned X is anyway), a (d,) query or m targets
    that are normalised (or one raw target), 1 ≤ 2n ≤ K ≤ :data:`GRAM_MAX_K`, work within
    :data:`ONCE_WORK` and scratch that fits the pool. Why: a selection made between other work (a
    model's forward pass, a store's search) starts with cold caches, where each numpy call or
    Python layer costs 10-30 µs instead of ~1; the general route makes some twenty of them
    (K=200, N=50, d=768, after 20 ms of other work: 0.47 ms that way, 0.35 ms this one; back to
    back both 0.24-0.25 ms).
    """
    if not (type(query) is np.ndarray and type(candidates) is np.ndarray):
        return None
    X, Q = candidates, query
    if not (X.dtype is _F32 and Q.dtype is _F32 and X.ndim == 2):  # native float32 (singleton)
        return None
    if Q.ndim == 1:
        Q = Q.reshape(1, -1)
    K, d = X.shape
    m = Q.shape[0]
    if not (Q.ndim == 2 and Q.shape[1] == d and 0 < 2 * n <= K <= GRAM_MAX_K and d > 0 < m):
        return None
    if not (m == 1 or normalize):
        return None
    if not (X.flags.carray and Q.flags.carray) and not all(  # read-only is copied in the call
        a.flags.c_contiguous and a.flags.aligned for a in (X, Q)
    ):
        return None
    if n * K * d + (K + m) * n * n // 2 > ONCE_WORK:
        return None
    xoff, size = one_call.once_plan(K, m, d, n, X.itemsize)
    region = scratch.take(8 * size)
    if region is None:
        return None
    stop = current_check()
    try:
        if stop is not None:
            stop()
        picks, var = np.empty(n, np.int64), np.empty(n)
        got = one_call.select_once(X, Q, lam, normalize, unique, alpha, region.words, xoff,
                                   picks, var)  # fmt: skip
        if got is None or not got[2]:
            return None
        prior = float(m) if normalize else float(region.words[K])
    finally:
        scratch.give(region)
    taken, hit = got[0], got[1]
    return picks[:taken], var[:taken], prior, hit


def _is_aligned(a: np.ndarray) -> bool:
    return a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % CACHE_LINE == 0


def aligned_input(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous, writable and starting on a cache line, copied only if not so: for a
    matrix read once per pick by several selections (a batch's shared candidates)."""
    if _is_aligned(a):
        return a
    out = aligned_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _compiled_input(a: np.ndarray) -> np.ndarray:
    """``a`` as the compiled loop takes it: C-contiguous and writable (a read-only array would
    be one more compiled specialisation: seconds on its first call), copied only if not so."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C")


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
    table: np.ndarray | None = None,
) -> GreedyResult:
    """Run (or, with ``order``, replay) the greedy and return (indices, σ²ₙ, σ²₀, stopped).

    ``X`` (K, d) and ``Q`` (m, d) are raw vectors in the compute dtype, ``sqx``/``sqq`` their
    float64 squared norms (already checked finite and, if ``normalize``, non-zero). With
    ``order`` the picks are given (baselines) and only the posterior variances are computed.
    ``gram``: force the Gram block (True) or per-pick kernel rows (False); None chooses
    (:func:`_kernel_path`). ``compiled``: the compiled loop (None: when available; False: numpy).
    ``table``: all kernel rows of ``X`` (:func:`._sift_compiled.kernel_table`, for a batch that
    shares ``X``); the compiled loop reads them instead of computing its own.
    """
    K, m = X.shape[0], Q.shape[0]
    prior = float(m) if normalize else float(sqq.sum())
    steps = n if order is None else len(order)
    if steps == 0 or K == 0:
        return _empty(prior)
    stop = current_check()  # cancellation (gRPC calls): checked before the Gram and every pick
    if stop is not None:
        stop()
    fn = compiled_loop.compiled_steps() if compiled is not False else None
    path = "table" if table is not None and fn is not None else _kernel_path(K, steps, gram, fn)
    if path in ("rows", "table"):
        got = _compiled_rows(fn, X, sqx, Q, sqq, lam, normalize, unique, prior, steps, order,
                             alpha, stop, table)  # fmt: skip
        if got is not None:
            return got[0], got[1], prior, got[2]
        path = "matvec"  # the compiled call failed: numpy from here (the inputs are untouched)
    # Kernel rows [k̃(x_j, X) | k(x_j, Q)], raw, in the compute dtype: all K at once (Gram
    # path: syrk into the left block, no float64 copy; rows are cast as they are read) or per pick.
    GT = None
    if path == "gram":
        size = compiled_loop.layout(K, m, steps)[-1]
        # the compiled loop's Gram block and state: reused, fork-proof memory (_scratch)
        region, GT, buf = scratch.arrays(X.dtype, K, K + m, 0 if fn is None else size)
        try:
            np.matmul(X, X.T, out=GT[:, :K])
            np.matmul(X, Q.T, out=GT[:, K:])
            if fn is not None:
                none = GT[:0, :0]
                got = compiled_loop.run_compiled(fn, GT, none, none, sqx, sqq, lam, normalize,
                                                 unique, prior, steps, order, alpha, stop,
                                                 buf)  # fmt: skip
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
