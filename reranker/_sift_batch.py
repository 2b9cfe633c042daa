"""Exact greedy SIFT for a batch of prompts as one vectorised program (numpy on CPU, torch on CUDA).

The recurrence of :mod:`._sift_np` (see there), vectorised over a batch axis B: each step is one
batched gain/argmax, one batched kernel-column fetch, one batched rank-n correction and the rank-1
state updates, so a batch of 64 prompts costs about as many array operations as one prompt.
The step is written with operators that numpy arrays and torch tensors share, so the very same
code runs on the CPU as numpy (no thread pools woken for small arrays) and on CUDA as torch.

Ragged inputs are padded: padded candidates get gain −∞ and a zero kernel column, padded targets a
zero kernel row, so neither changes any real number. Kernel columns come from a per-prompt Gram
block [candidates | targets] (small K; syrk per prompt on the CPU, one batched matmul on CUDA), or
one batched mat-vec per step (large K, never forming K×K). With one candidate matrix shared by
all prompts the Gram block or mat-vecs are computed once. The greedy state is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._blas import single_thread_blas
from ._sift_np import GRAM_MAX_K, use_gram

__all__ = ["BatchInput", "greedy_batch"]

_BATCH_GRAM_MAX_ELEMS = 1 << 25  # cap on B·K·(K+m) kernel entries held at once (128 MB fp32)
_CPU_CHUNK_BYTES = 1 << 20  # W of one CPU chunk (B·n·(K+m)·8 bytes) should stay in L2

Array = Any  # numpy.ndarray on the CPU, torch.Tensor on CUDA


@dataclass
class BatchInput:
    """One validated prompt: arrays in the compute dtype, float64 squared norms."""

    X: Array  # (K, d); ignored when the batch shares candidates
    sqx: Array  # (K,)
    Q: Array  # (m, d)
    sqq: Array  # (m,)


class _Xp:
    """The few calls where numpy and torch differ (everything else is shared operators)."""

    def __init__(self, like: Array) -> None:
        self.torch = isinstance(like, torch.Tensor)
        self.device = like.device if self.torch else None

    def zeros(self, shape: tuple[int, ...], kind: str, like: Array | None = None) -> Array:
        if self.torch:
            dt = {"f64": torch.float64, "i64": torch.long, "bool": torch.bool}.get(kind)
            return torch.zeros(shape, dtype=dt if dt else like.dtype, device=self.device)
        npdt = {"f64": np.float64, "i64": np.int64, "bool": bool}.get(kind)
        return np.zeros(shape, dtype=npdt if npdt else like.dtype)

    def f64(self, x: Array) -> Array:
        return x.to(torch.float64) if self.torch else x.astype(np.float64)

    def arange(self, n: int) -> Array:
        return torch.arange(n, device=self.device) if self.torch else np.arange(n)

    def cat(self, parts: list[Array], axis: int) -> Array:
        return torch.cat(parts, dim=axis) if self.torch else np.concatenate(parts, axis=axis)

    def diag(self, x: Array) -> Array:
        if self.torch:
            return torch.diagonal(x, dim1=1, dim2=2)
        return np.diagonal(x, axis1=1, axis2=2)

    def numpy(self, x: Array) -> np.ndarray:
        return x.cpu().numpy() if self.torch else np.asarray(x)


def _inv(sq: Array, normalize: bool) -> Array:
    return sq**-0.5 if normalize else sq * 0 + 1


def _pad(xp: _Xp, rows: list[Array], length: int) -> Array:
    """Stack along a new batch axis, zero-padding axis 0 to ``length`` (read-only result).

    A single full-length row is returned as a view: no copy of a large candidate matrix.
    """
    if len(rows) == 1 and rows[0].shape[0] == length:
        return rows[0][None]
    out = xp.zeros((len(rows), length, *rows[0].shape[1:]), "same", like=rows[0])
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out


def _gram_blocks(xp: _Xp, prompts: list[BatchInput], kmax: int, mmax: int) -> Array:
    """(B, K, K+M) raw inner products [candidates | targets] per prompt, in the compute dtype.

    Unnormalised on purpose: scaling happens on the fetched float64 column, which saves a
    normalised copy of every candidate matrix (a cold-memory pass as costly as the product).
    """
    if xp.torch:  # CUDA: one batched matmul
        Xp = _pad(xp, [p.X for p in prompts], kmax)
        return Xp @ xp.cat([Xp, _pad(xp, [p.Q for p in prompts], mmax)], 1).swapaxes(1, 2)
    out = np.zeros((len(prompts), kmax, kmax + mmax), dtype=prompts[0].X.dtype)
    for b, p in enumerate(prompts):  # CPU: syrk per prompt, half the flops of a matmul
        k, m = p.X.shape[0], p.Q.shape[0]
        out[b, :k, :k] = p.X @ p.X.T
        out[b, :k, kmax : kmax + m] = p.X @ p.Q.T
    return out


def _kernels(
    xp: _Xp,
    prompts: list[BatchInput],
    shared: BatchInput | None,
    normalize: bool,
    gram: bool | None,
    n: int,
) -> tuple[Callable[[Array], Array], Array, Array, Array | None]:
    """Return (column(j) → (B, K+M) float64, C₀ (B, M, K), diag₀ (B, K), valid (B, K) | None)."""
    B = len(prompts)
    ar = xp.arange(B)
    mmax = max(p.Q.shape[0] for p in prompts)
    rq = _pad(xp, [_inv(p.sqq, normalize) for p in prompts], mmax)  # (B, M); pads 0
    Qn = _pad(xp, [p.Q for p in prompts], mmax)
    Qn = Qn * (rq.to(Qn.dtype) if xp.torch else rq.astype(Qn.dtype))[:, :, None]

    if shared is not None:
        X, K = shared.X, shared.X.shape[0]
        rx1 = _inv(shared.sqx, normalize)  # raw products, scaled in float64: no copy of X
        T = xp.f64(Qn @ X.T) * rx1  # (B, M, K)
        diag = xp.f64(shared.sqx * rx1 * rx1)[None, :] + xp.zeros((B, K), "f64")
        if gram is None:
            gram = K <= GRAM_MAX_K and (xp.torch or use_gram(K, n))
        G = X @ X.T if gram else None  # computed once for the whole batch (syrk on numpy)

        def shared_col(j: Array) -> Array:
            colc = xp.f64(G[j] if G is not None else X[j] @ X.T) * rx1 * rx1[j][:, None]
            return xp.cat([colc, T[ar, :, j]], 1)

        return shared_col, T, diag, None

    ks = [p.X.shape[0] for p in prompts]
    kmax = max(ks)
    rx = _pad(xp, [_inv(p.sqx, normalize) for p in prompts], kmax)  # (B, K); pads 0
    valid = None
    if min(ks) < kmax:
        lengths = xp.zeros((B,), "i64")
        for b, k in enumerate(ks):
            lengths[b] = k
        valid = xp.arange(kmax)[None, :] < lengths[:, None]
    if gram is None:
        gram = (
            kmax <= GRAM_MAX_K
            and B * kmax * (kmax + mmax) <= _BATCH_GRAM_MAX_ELEMS
            and (xp.torch or use_gram(kmax, n))
        )
    if gram:
        GT = _gram_blocks(xp, prompts, kmax, mmax)
        diag = xp.f64(xp.diag(GT[:, :, :kmax])) * rx * rx
        C0 = xp.f64(GT[:, :, kmax:].swapaxes(1, 2)) * rq[:, :, None] * rx[:, None, :]
        scale = xp.cat([rx, rq], 1)  # (B, K+M)

        def gram_col(j: Array) -> Array:
            return xp.f64(GT[ar, j]) * (scale * rx[ar, j][:, None])

        return gram_col, C0, diag, valid

    Xpad = _pad(xp, [p.X for p in prompts], kmax)  # raw; columns are scaled afterwards
    C0 = xp.f64(Qn @ Xpad.swapaxes(1, 2)) * rx[:, None, :]
    diag = _pad(xp, [p.sqx for p in prompts], kmax) * rx * rx

    def matvec_col(j: Array) -> Array:
        xj = Xpad[ar, j][:, :, None]  # (B, d, 1)
        scale = rx[ar, j][:, None]
        colc = xp.f64((Xpad @ xj)[:, :, 0]) * rx * scale
        colt = xp.f64((Qn @ xj)[:, :, 0]) * scale
        return xp.cat([colc, colt], 1)

    return matvec_col, C0, diag, valid


def greedy_batch(
    prompts: list[BatchInput],
    shared: BatchInput | None,
    *,
    n: int,
    lam: float,
    normalize: bool,
    unique: bool,
    gram: bool | None = None,
    orders: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy SIFT for every prompt; per prompt (indices int64, σ²ₙ float64), length n each.

    ``shared`` carries candidates common to all prompts (then ``prompts[b].X`` is ignored). With
    ``orders`` (B, n) the picks are given (baselines) and only σ²ₙ is computed. Adaptive stopping
    is applied by the caller on the returned prefix.
    """
    xp = _Xp(prompts[0].Q)
    kmax = shared.X.shape[0] if shared is not None else max(p.X.shape[0] for p in prompts)
    ms = [p.Q.shape[0] for p in prompts]
    if n == 0 or kmax == 0:
        return [(np.zeros(0, np.int64), np.zeros(0)) for _ in prompts]
    # On the CPU the rank-n corrections re-read W (B·n·(K+m) float64) every step; chunks whose W
    # fits in L2 keep that traffic in cache (measured ~2× faster at B=64, K=200, n=50).
    chunk = len(prompts)
    if not xp.torch:
        chunk = max(1, _CPU_CHUNK_BYTES // (8 * n * (kmax + max(ms))))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    with single_thread_blas():
        for lo in range(0, len(prompts), chunk):
            hi = lo + chunk
            part = prompts[lo:hi]
            k_part = kmax if shared is not None else max(p.X.shape[0] for p in part)
            sub = None if orders is None else orders[lo:hi]
            out += _run(xp, part, shared, n, lam, normalize, unique, gram, sub, k_part, ms[lo:hi])
    return out


def _run(
    xp: _Xp,
    prompts: list[BatchInput],
    shared: BatchInput | None,
    n: int,
    lam: float,
    normalize: bool,
    unique: bool,
    gram: bool | None,
    orders: np.ndarray | None,
    kmax: int,
    ms: list[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    B, mmax = len(prompts), max(ms)
    kernel_col, C, diag, valid = _kernels(xp, prompts, shared, normalize, gram, n)
    ar = xp.arange(B)
    C = C + 0.0  # own copy: (B, M, K) holds Σ[t, j]
    dl = diag + lam
    tv = xp.zeros((B,), "f64")
    for b, (m, p) in enumerate(zip(ms, prompts, strict=True)):
        tv[b] = float(m) if normalize else float(p.sqq.sum())
    W = xp.zeros((B, n, kmax + mmax), "f64")
    picks = xp.zeros((B, n), "i64")
    var = xp.zeros((B, n), "f64")
    blocked = None
    if valid is not None or unique:
        blocked = xp.zeros((B, kmax), "bool")
        if valid is not None:
            blocked |= ~valid
    order_arr = None
    if orders is not None:
        order_arr = torch.from_numpy(orders).to(xp.device) if xp.torch else orders
    single = mmax == 1
    c = C[:, 0] if single else None  # (B, K) view: the one target's Σ[t, j]
    for i in range(n):
        if order_arr is not None:
            j = order_arr[:, i]
        else:
            gain = c * c if single else (C * C).sum(1)
            gain /= dl
            if blocked is not None:
                gain[blocked] = -np.inf
            j = gain.argmax(1)
        w = kernel_col(j)  # fresh float64 array, turned into wᵢ in place
        if i:
            w -= (W[ar, :i, j][:, None, :] @ W[:, :i])[:, 0]
        s = w[ar, j].clip(min=0.0) + lam  # Σ[j,j] ≥ 0 up to rounding
        w *= (s**-0.5)[:, None]
        W[:, i] = w
        wc = w[:, :kmax]
        dl -= wc * wc
        if single:
            wt0 = w[:, kmax]
            c -= wt0[:, None] * wc
            tv -= wt0 * wt0
        else:
            wt = w[:, kmax:]
            C -= wt[:, :, None] * wc[:, None, :]
            tv -= (wt * wt).sum(1)
        var[:, i] = tv
        picks[:, i] = j
        if unique:
            blocked[ar, j] = True
    var = var.clip(min=0.0)
    picks_np, var_np = xp.numpy(picks), xp.numpy(var)
    return [(picks_np[b].copy(), var_np[b].copy()) for b in range(B)]
