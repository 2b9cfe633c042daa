"""One compiled call for the common selection (:func:`._sift_np.greedy_once` says when): the
input norms and their check, the cache-line copy of X, the set-up and every pick of the compiled
loop (:mod:`._sift_compiled`, kernel rows), with no Python between them.

Why one call: a selection made between other work (a model's forward pass, a store's search)
starts with cold caches, where each numpy call or Python layer costs 10-30 µs instead of ~1,
and after a ``fork`` (a DataLoader's) every Python object it touches costs a copy-on-write
fault. :func:`sqnorms` gives every other float32 route the same squared norms, so each route to a
selection starts from the same bits.

The kernels here call :mod:`._sift_compiled`'s compiled ones through this module's globals,
bound by :func:`bind` when that module builds (numba reads them as it compiles).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qdrant_sift.arrays import CACHE_LINE

from . import _sift_compiled as loop

__all__ = ["once_plan", "select_once", "sqnorms"]

_dots: Any = loop._dots_py  # the compiled kernels, once bound
_steps: Any = loop._steps_py
_layout: Any = loop.layout


def bind(njit: Any, steps: Any, dots: Any) -> None:
    """Take the compiled loop's kernels and compile this module's (called by its build)."""
    global _dots, _steps, _layout, _sqnorms, _select
    _dots, _steps = dots, steps
    _layout = njit(loop.layout)
    _sqnorms = njit(_sqnorms_py)
    _select = njit(_select_py)


def _sqnorms_py(A: Any, out: Any, positive: bool) -> bool:
    """out[k] = A[k]·A[k] (the compiled loop's dot kernel: the very bits of the kernel rows'
    diagonal); False when one is NaN or infinite (a NaN or infinity in the row, or float32
    squares beyond its range) or, if ``positive``, zero: the caller's checks then find which
    and raise."""
    _dots(A, None, out)
    ok = True
    for k in range(A.shape[0]):
        if not math.isfinite(out[k]) or (positive and not out[k] > 0.0):
            ok = False
    return ok


_sqnorms: Any = _sqnorms_py  # compiled by bind


def _select_py(
    X: Any, Q: Any, lam: float, normalize: bool, unique: bool, alpha: float, has_alpha: bool,
    mem: Any, xoff: int, picks: Any, var_out: Any,
) -> tuple[int, bool, bool]:  # fmt: skip
    """A whole kernel-rows selection in one call (:func:`select_once`): squared norms and their
    check, X copied to a cache-line boundary if it does not start on one, set-up and every
    pick. ``mem`` is float64 scratch and ``xoff`` where its copy of X starts, both from
    :func:`once_plan`. Returns (picks taken, stopped by
    ``alpha``, inputs fine); not fine (a norm NaN, infinite, or zero with ``normalize``) means
    nothing was picked."""
    K, d = X.shape
    m = Q.shape[0]
    steps = picks.shape[0]
    sqx = mem[:K]
    sqq = mem[K : K + m]
    if not (_sqnorms(Q, sqq, normalize) and _sqnorms(X, sqx, normalize)):
        return 0, False, False
    lay = _layout(K, m, steps)
    head = K + m
    buf = mem[head : head + lay[-1]]
    Xr = X
    if X.ctypes.data % CACHE_LINE != 0:
        Xr = mem[xoff:].view(X.dtype)[: K * d].reshape(K, d)
        Xr[:] = X
    prior = float(m) if normalize else sqq[0]  # one raw target (the caller's condition)
    none = np.empty((0, 0), X.dtype)
    order = np.empty(0, np.int64)
    taken, hit = _steps(none, Xr, Q, sqx, sqq, lam, normalize, unique, prior, order, buf, lay,
                        picks, 0, steps, alpha, has_alpha)  # fmt: skip
    var0 = lay[6]
    for i in range(taken):
        var_out[i] = buf[var0 + i]
    return taken, hit, True


_select: Any = _select_py  # compiled by bind


def once_plan(k: int, m: int, d: int, steps: int, itemsize: int) -> tuple[int, int]:
    """:func:`select_once`'s float64 scratch: (where its aligned copy of X starts, its size).
    The norms and the state come first; the copy starts at the next 64-byte step."""
    xoff = -(-(k + m + loop.layout(k, m, steps)[-1]) // 8) * 8
    return xoff, xoff + -(-k * d * itemsize // 8)


def select_once(
    X: np.ndarray, Q: np.ndarray, lam: float, normalize: bool, unique: bool,
    alpha: float | None, mem: np.ndarray, xoff: int, picks: np.ndarray, var_out: np.ndarray,
) -> tuple[int, bool, bool] | None:  # fmt: skip
    """:func:`_select_py` (X, Q float32, C-contiguous; ``mem`` and ``xoff`` from
    :func:`once_plan`), or None when the compiled loop is unavailable or fails. A read-only X
    is copied where the call copies a misaligned one (a read-only array would be another
    compiled variant)."""
    if loop.compiled_steps() is None:
        return None
    if not X.flags.writeable:
        k, d = X.shape
        copy = mem[xoff : xoff + -(-k * d // 2)].view(np.float32)[: k * d].reshape(k, d)
        np.copyto(copy, X)
        X = copy
    if not Q.flags.writeable:
        Q = Q.copy()
    try:
        got: tuple[int, bool, bool] = _select(X, Q, lam, normalize, unique, alpha or 0.0,
                                              alpha is not None, mem, xoff, picks,
                                              var_out)  # fmt: skip
    except Exception:  # a numba that cannot compile this: the caller takes the general route
        return None
    return got


def sqnorms(A: np.ndarray, positive: bool) -> np.ndarray | None:
    """Squared row norms (float64) of a C-contiguous ``A`` by the dot kernel, the bits every
    compiled selection uses (a read-only ``A`` gets its own compiled variant of this small
    kernel, not a copy); None without the compiled loop or when a norm is NaN, infinite or, if
    ``positive``, zero (the caller's checks then find the cause)."""
    if loop.compiled_steps() is None:
        return None
    out = np.empty(A.shape[0])
    try:
        ok = _sqnorms(A, out, positive)
    except Exception:
        return None
    return out if ok else None
