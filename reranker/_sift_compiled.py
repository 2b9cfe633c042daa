"""The compiled pick loop (optional: numba) of the single-prompt engine :mod:`._sift_np`.

With numba importable (and QDRANT_SIFT_NUMBA not "0"), the whole greedy after the input checks
runs as one compiled function instead of ~10 numpy calls per pick, whose fixed cost (about 1 µs
each) is most of a small selection. The arithmetic is the numpy loop's, written out (the rank-n
correction is summed pick by pick instead of by a BLAS mat-vec, so σ² may differ in the last
bits; ties still go to the lowest index). The state set-up (λ_j, dl, C, the target weights)
runs in the same call, in one float64 buffer: each numpy call it replaces costs ~1 µs warm and
tens of µs when another process has just evicted the caches (the common case on a shared
machine). Compiled once per process and dtype on first use (a few seconds; cached on disk
beside this file where writable).

Where the kernel rows come from:

* **rows** (``GT`` empty): the loop computes the row [x_j·X | x_j·Q] of each pick itself, K·d
  multiply-adds a pick. A selection of n ≤ K/2 picks needs at most n of the K rows, so this is
  at most the work of the symmetric Gram product and, at K=200, N=50, d=384, half of it
  (0.09 ms against syrk's 0.17 ms on one core here), with no BLAS call at all. The dot products
  are compiled with reassociation (:func:`_dots_py`), so they are summed in vector lanes like
  BLAS sums them, in an order of their own: the kernel differs from syrk's in the last float32
  bits, never by more than float32 rounding of an inner product.
* **Gram block** ``GT`` (K × (K+m), BLAS syrk, computed by the caller): for selections of more
  than K/2 picks, where most rows are needed (some more than once).

:mod:`._sift_once` runs a whole kernel-rows selection, its input norms and their check
included, as one call of these kernels, and gives every float32 route the same norms.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from typing import Any

import numpy as np

__all__ = [
    "CHUNK_WORK",
    "compiled_available",
    "compiled_steps",
    "kernel_table",
    "layout",
    "run_compiled",
]

CHUNK_WORK = 1 << 22  # multiply-adds of one compiled call: ~4 M, a few ms (or one pick)
_FASTMATH = {"reassoc", "contract"}  # the kernel rows' dot products only: vectorised sums
_lock = threading.Lock()
_fn: Any = None
_state = "unknown"  # "unknown" | "ready" | "uncached" | "off"
_NO_ORDER = np.zeros(0, np.int64)  # "no given order" for the compiled loop (never written)


def layout(k: int, m: int, steps: int) -> tuple[int, ...]:
    """Offsets of the compiled loop's state in its one float64 buffer: W (steps × (K+m)) | dl |
    λ_j | pen | C (m × K) | raw target products T (m × K) | target weights (m) | σ² (steps) |
    raw target variance (1); size."""
    dl = steps * (k + m)
    lamj = dl + k
    pen = lamj + k
    c = pen + k
    t = c + m * k
    ts = t + m * k
    var = ts + m
    tv = var + steps
    return dl, lamj, pen, c, t, ts, var, tv, tv + 1


def _dots_py(A: Any, x: Any, out: Any) -> None:
    """out[k] = A[k]·x, or A[k]·A[k] when ``x`` is None (the squared norms: numba compiles that
    case on its own, the same loop without a call per row), summed in A's dtype. Compiled with
    reassociation, so the sum runs in vector lanes; every product of the loop goes through this
    one function, so equal inputs give equal bits (ties between duplicate candidates stay ties;
    a squared norm is the very bits of the kernel rows' diagonal, which a test holds it to)."""
    d = A.shape[1]
    if d == 0:
        out[: A.shape[0]] = 0.0
        return
    for k in range(A.shape[0]):
        a = A[k]
        v = a if x is None else x
        s = a[0] - a[0]  # a zero of A's dtype (inputs are finite), so the sum stays in it
        for e in range(d):
            s += a[e] * v[e]
        out[k] = s


_dots = _dots_py  # the compiled kernel once built (:func:`_build`); _steps_py calls this name


def _kernel_dims_py(GT: Any, X: Any, Q: Any) -> tuple[int, int]:
    """(K, m) of a compiled selection: with ``GT`` empty (kernel rows per pick) or a K × K
    :func:`kernel_table`, from ``X`` and ``Q``; else from the Gram block's K × (K+m) shape. The
    one rule that :func:`run_compiled` (sizing the state) and the loop (reading it) share."""
    rows = GT.shape[0] == 0
    k = X.shape[0] if rows else GT.shape[0]
    m = Q.shape[0] if rows or GT.shape[1] == k else GT.shape[1] - k
    return k, m


_kernel_dims = _kernel_dims_py  # compiled by :func:`_build` before the loop that calls it


def _steps_py(
    GT: Any, X: Any, Q: Any, sqx: Any, sqq: Any, lam: float, normalize: bool, unique: bool,
    prior: float, order: Any, buf: Any, lay: Any, picks: Any, i0: int, i1: int, alpha: float,
    has_alpha: bool,
) -> tuple[int, bool]:  # fmt: skip
    """Picks ``i0``..``i1`` of the greedy (:mod:`._sift_np`'s numpy loop, unrolled), state in
    ``buf``.

    One call sets up the state (when ``i0 == 0``) and runs the picks. Kernel rows come from
    ``GT``: a Gram block [X·Xᵀ | X·Qᵀ] (K × (K+m)), or a table of X·Xᵀ alone (K × K, from
    :func:`kernel_table`; the target products are then computed here from ``X`` and ``Q``); or,
    when ``GT`` has no rows, each pick's row is computed here (``X``, ``Q`` C-contiguous).
    ``lay`` is :func:`layout`'s tuple for this call (computed by the caller: a compiled function
    calls no Python). Returns (picks taken, stopped by ``alpha``); ``order``
    of length 0 means none. The σ² of pick i is ``buf[var + i]``.
    """
    rows = GT.shape[0] == 0
    K, m = _kernel_dims(GT, X, Q)
    own_targets = rows or GT.shape[1] == K  # the target products computed here from X and Q
    width = K + m
    steps = picks.shape[0]
    o_dl, o_lamj, o_pen, o_c, o_t, o_ts, o_var, o_tv, _ = lay
    W = buf[: steps * width].reshape(steps, width)
    dl = buf[o_dl : o_dl + K]
    lamj = buf[o_lamj : o_lamj + K]
    pen = buf[o_pen : o_pen + K]
    C = buf[o_c : o_c + m * K].reshape(m, K)
    T = buf[o_t : o_t + m * K].reshape(m, K)
    ts = buf[o_ts : o_ts + m]
    variances = buf[o_var : o_var + steps]
    single = m == 1
    given = order.shape[0] > 0
    use_pen = unique and not given
    # σ² = tv · var_scale; the single target stays raw (its weight rescales every gain alike)
    var_scale = (1.0 / sqq[0] if normalize else 1.0) if single else 1.0
    if i0 == 0:  # the numpy loop's set-up
        for t in range(m):
            if own_targets:
                _dots(X, Q[t], T[t])
            else:
                for k in range(K):
                    T[t, k] = GT[k, K + t]
        if rows:
            _dots(X, None, dl)
        for k in range(K):
            lamj[k] = sqx[k] * lam if normalize else lam
            if rows:
                dl[k] += lamj[k]
            else:
                dl[k] = np.float64(GT[k, k]) + lamj[k]
            pen[k] = 0.0
        for t in range(m):
            ts[t] = 1.0 if single or not normalize else math.sqrt(1.0 / sqq[t])
            for k in range(K):
                C[t, k] = T[t, k] if single else T[t, k] * ts[t]
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
        if rows:
            _dots(X, X[j], w[:K])
        else:
            for k in range(K):
                w[k] = GT[j, k]
        for t in range(m):
            w[K + t] = T[t, j] * ts[t]
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


_steps = _steps_py  # compiled by _build


def _table_py(X: Any, G: Any) -> None:
    """G[j] = X·x_j for every j: the very products (and bits) the loop computes per pick."""
    for j in range(X.shape[0]):
        _dots(X, X[j], G[j])


_table = _table_py  # compiled by _build


_SWITCH = "QDRANT_SIFT_NUMBA"
_OFF = ("0", "false", "no", "off")
# CPython keeps os.environ's live values in a plain dict of bytes on POSIX (updated by every
# os.environ write, so monkeypatch.setenv and the like are seen). Reading it directly skips the
# four Python-level calls of os.environ.get, which after a fork (a DataLoader's, activeft's)
# write-fault ~25 pages of the interpreter's objects on every selection; the dict read, 2.
_ENV_DATA = getattr(os.environ, "_data", None) if os.name == "posix" else None
_ENV_KEY = os.fsencode(_SWITCH)


def _switched_off() -> bool:
    if type(_ENV_DATA) is dict:
        raw = _ENV_DATA.get(_ENV_KEY)
        return raw is not None and os.fsdecode(raw).strip().lower() in _OFF
    return os.environ.get(_SWITCH, "1").strip().lower() in _OFF


def _numba() -> Any:
    """The numba module, or None when it is not installed or switched off."""
    if _switched_off():
        return None
    try:
        return importlib.import_module("numba")
    except Exception:  # not installed, or unusable with this numpy
        return None


def _build(nb: Any, cache: bool) -> Any:
    """Compile the dot kernel and the dims rule, then what calls them (numba reads ``_dots`` and
    ``_kernel_dims`` as it compiles them)."""
    global _dots, _kernel_dims, _table, _steps
    _dots = nb.njit(cache=cache, nogil=True, fastmath=_FASTMATH)(_dots_py)
    _kernel_dims = nb.njit(cache=cache, nogil=True)(_kernel_dims_py)
    _table = nb.njit(cache=cache, nogil=True)(_table_py)
    _steps = nb.njit(cache=cache, nogil=True)(_steps_py)
    from . import _sift_once  # imports this module: bound here, after both are loaded

    _sift_once.bind(nb.njit(cache=cache, nogil=True), _steps, _dots)
    return _steps


def kernel_table(X: np.ndarray) -> np.ndarray | None:
    """All K kernel rows of ``X`` (C-contiguous, writable) as a K × K float64 table, computed
    as the compiled loop computes each pick's row, so selections read from it pick and score
    exactly as those computing their own rows (None without the compiled loop). For a batch
    sharing one candidate set: one table of K²·d multiply-adds instead of N·K·d per prompt."""
    if compiled_steps() is None:
        return None
    table = np.empty((X.shape[0], X.shape[0]))
    try:
        _table(X, table)
    except Exception:  # a numba that cannot compile this: the caller computes rows per prompt
        return None
    return table


def compiled_available() -> bool:
    """Whether the compiled pick loop can be used (numba importable and not switched off)."""
    return _state != "off" and _numba() is not None


def compiled_steps() -> Any:
    """The compiled :func:`_steps_py`, or None (numba missing, switched off, or it failed)."""
    global _fn, _state
    if _switched_off():  # checked per call, and it leaves the state alone: a switch, not a verdict
        return None
    if _state in ("ready", "uncached"):
        return _fn
    if _state == "off":
        return None
    with _lock:
        if _state == "unknown":
            nb = _numba()
            try:
                _fn = None if nb is None else _build(nb, cache=True)
            except Exception:
                _fn = None
            _state = "ready" if _fn is not None else "off"
    return _fn


def chunk_end(done: int, steps: int, width: int, row_work: int = 0) -> int:
    """End of the next compiled call's picks: pick i costs i·width multiply-adds of rank-n
    correction plus ``row_work`` (K·d when it computes its own kernel row), so picks done..hi
    cost width·(hi² − done²)/2 + row_work·(hi − done); keep that near :data:`CHUNK_WORK` (a few
    ms), at least one pick.

    One call for a small selection (each call costs ~10 µs of argument checks); for a large one
    calls of a few milliseconds however far it has got, so cancellation stops it promptly (a
    fixed count of picks a call would grow without bound in N and K: 16 picks were ~320 M
    multiply-adds a call late in an N = 10k, K = 2k selection).
    """
    a = max(width, 1) / 2.0
    c = CHUNK_WORK + a * done * done + row_work * done
    hi = int((math.sqrt(row_work * row_work + 4.0 * a * c) - row_work) / (2.0 * a))
    return min(steps, max(hi, done + 1))


def run_compiled(
    fn: Any, GT: np.ndarray, X: np.ndarray, Q: np.ndarray, sqx: np.ndarray, sqq: np.ndarray,
    lam: float, normalize: bool, unique: bool, prior: float, steps: int,
    order: np.ndarray | None, alpha: float | None, stop: Any, buf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool] | None:  # fmt: skip
    """The whole greedy, compiled, in chunks; None if the compiled call fails (then the caller
    runs the numpy loop: the inputs are untouched). ``GT`` is the Gram block, a
    :func:`kernel_table`, or an empty array for kernel rows computed per pick (``X``, ``Q``
    C-contiguous); ``buf`` is float64 scratch of :func:`layout`'s size, allocated here unless
    given."""
    global _fn, _state
    rows = GT.shape[0] == 0
    K, m = _kernel_dims_py(GT, X, Q)
    width = K + m
    lay = layout(K, m, steps)
    buf = np.empty(lay[-1]) if buf is None else buf
    picks = np.empty(steps, np.int64)
    order_a = _NO_ORDER if order is None else np.ascontiguousarray(order, np.int64)
    row_work = K * X.shape[1] if rows else 0
    done, taken, hit = 0, steps, False
    while done < steps and not hit:
        if stop is not None:
            stop()
        hi = chunk_end(done, steps, width, row_work)
        try:
            taken, hit = fn(GT, X, Q, sqx, sqq, lam, normalize, unique, prior, order_a, buf, lay,
                            picks, done, hi, alpha or 0.0, alpha is not None)  # fmt: skip
        except Exception:
            with _lock:
                nb = _numba()
                if _state == "ready" and done == 0 and nb is not None:
                    # an unreadable on-disk cache (numba's, beside this file): compile afresh
                    _state = "uncached"
                    _fn = _build(nb, cache=False)
                else:  # a numba that cannot compile this: numpy from now on
                    _state = "off"
            if _state == "off":
                return None
            fn = _fn
            continue
        done = hi
    var0 = lay[6]
    return picks[:taken], buf[var0 : var0 + taken].copy(), hit  # picks: this call's own array
