"""Exact greedy SIFT for a batch of prompts as one vectorised program (numpy on CPU, torch on CUDA).

The recurrence of :mod:`._sift_np` (see there), vectorised over a batch axis B: each step is one
batched gain/argmax, one batched kernel-column fetch, one batched rank-n correction and the rank-1
state updates, so a batch of 64 prompts costs about as many array operations as one prompt.
The step is written with the few calls of :class:`_Xp`, so the very same code runs on the CPU as
numpy (no thread pools woken for small arrays) and on CUDA as torch.

Candidates stay unnormalised (see :func:`_run`): kernel columns are raw inner products, used as
fetched, with no per-step rescaling. Ragged inputs are padded: padded candidates get gain −∞ and a
zero kernel column, padded targets a zero kernel row, so neither changes any real number. Kernel
columns come from a per-prompt Gram block [candidates | targets] (small K; syrk per prompt on the
CPU, one batched matmul on CUDA), or one batched mat-vec per step (large K, never forming K×K).
With one candidate matrix shared by all prompts the Gram block or mat-vecs are computed once.
The greedy state is float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._blas import single_thread_blas
from ._cancel import current_check
from ._sift_np import GRAM_MAX_K, use_gram

__all__ = ["BatchInput", "greedy_batch"]

_BATCH_GRAM_MAX_ELEMS = 1 << 25  # cap on B·K·(K+m) kernel entries held at once (128 MB fp32)
_CPU_CHUNK_BYTES = 5 << 19  # W of one CPU chunk (B·n·(K+m)·8 bytes): about one L2 (2.5 MiB)
_SHARED_CHUNK_BYTES = 1 << 26  # cap on W of a chunk sharing mat-vec columns (64 MiB)

Array = Any  # numpy.ndarray on the CPU, torch.Tensor on CUDA


@dataclass
class BatchInput:
    """One validated prompt: arrays in the compute dtype, float64 squared norms."""

    X: Array  # (K, d); ignored when the batch shares candidates
    sqx: Array  # (K,)
    Q: Array  # (m, d)
    sqq: Array  # (m,)


class _Xp:
    """The few calls where numpy and torch differ; numpy gets ``out=`` forms (no temporaries)."""

    def __init__(self, like: Array) -> None:
        self.torch = isinstance(like, torch.Tensor)
        self.device = like.device if self.torch else None

    def zeros(self, shape: tuple[int, ...], kind: str, like: Array | None = None) -> Array:
        if self.torch:
            dt = {"f64": torch.float64, "i64": torch.long, "bool": torch.bool}.get(kind)
            if dt is None:  # "same": the dtype of ``like``
                assert like is not None
                dt = like.dtype
            return torch.zeros(shape, dtype=dt, device=self.device)
        npdt: Any = {"f64": np.float64, "i64": np.int64, "bool": bool}.get(kind)
        if npdt is None:
            assert like is not None
            npdt = like.dtype
        return np.zeros(shape, dtype=npdt)

    def f64(self, x: Array) -> Array:
        """A float64 copy in C order (own memory: callers update it in place)."""
        if self.torch:
            return x.to(torch.float64, memory_format=torch.contiguous_format, copy=True)
        return np.array(x, dtype=np.float64, order="C")

    def arange(self, n: int) -> Array:
        return torch.arange(n, device=self.device) if self.torch else np.arange(n)

    def cat(self, parts: list[Array], axis: int) -> Array:
        return torch.cat(parts, dim=axis) if self.torch else np.concatenate(parts, axis=axis)

    def scale(self, x: Array, r: Array) -> Array:
        """Rows of ``x`` times ``r`` (float64), in ``x``'s dtype."""
        return x * (r.to(x.dtype) if self.torch else r.astype(x.dtype))[:, None]

    def mul(self, a: Array, b: Array, out: Array) -> None:
        (torch.mul if self.torch else np.multiply)(a, b, out=out)

    def sub(self, a: Array, b: Array, out: Array) -> None:
        (torch.sub if self.torch else np.subtract)(a, b, out=out)

    def maximum(self, a: Array, b: Array) -> Array:
        return torch.maximum(a, b) if self.torch else np.maximum(a, b)

    def rows(self, a: Array, idx: Array) -> Array:
        """``a.reshape(-1, a.shape[-1])[idx]`` (``a`` C-contiguous): a flat gather."""
        flat = a.reshape(-1, a.shape[-1])
        return flat[idx] if self.torch else np.take(flat, idx, axis=0)

    def take(self, a: Array, idx: Array) -> Array:
        """``a.reshape(-1)[idx]`` for a C-contiguous ``a``."""
        return a.reshape(-1)[idx] if self.torch else np.take(a.reshape(-1), idx)

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


def _gram_blocks(xp: _Xp, Xs: list[Array], Qs: list[Array], kmax: int, mmax: int) -> Array:
    """(B, K, K+M) inner products [candidates | targets] per prompt, in the compute dtype."""
    if xp.torch:  # CUDA: one batched matmul
        Xp = _pad(xp, Xs, kmax)
        return Xp @ xp.cat([Xp, _pad(xp, Qs, mmax)], 1).swapaxes(1, 2)
    ragged = any(x.shape[0] < kmax or q.shape[0] < mmax for x, q in zip(Xs, Qs, strict=True))
    alloc = np.zeros if ragged else np.empty  # pads must be 0; otherwise every entry is written
    out = alloc((len(Xs), kmax, kmax + mmax), dtype=Xs[0].dtype)
    for b, (X, Q) in enumerate(zip(Xs, Qs, strict=True)):  # CPU: syrk per prompt, into out
        k, m = X.shape[0], Q.shape[0]
        np.matmul(X, X.T, out=out[b, :k, :k])
        np.matmul(X, Q.T, out=out[b, :k, kmax : kmax + m])
    return out


@dataclass
class _Kernel:
    """Kernel data of a chunk: candidates raw, targets normalised (see :func:`_run`)."""

    column: Callable[[Array, Array], Array]  # (j, j + b·K) → [k̃(X, x_j) | k(Q̂, x_j)] (B, K+M)
    C: Array  # (B, M, K) float64, own memory: k(q̂_t, x_j)
    sqx: Array  # (B, K) float64 raw squared norms (0 for pads)
    valid: Array | None  # (B, K) bool, None when no candidate is padding


def _shared_gram(xp: _Xp, k: int, n: int) -> bool:
    """Whether a shared candidate matrix gets a Gram block (else one mat-vec per pick)."""
    return k <= GRAM_MAX_K and (xp.torch or use_gram(k, n))


def _kernels(
    xp: _Xp,
    prompts: list[BatchInput],
    shared: BatchInput | None,
    normalize: bool,
    gram: bool | None,
    n: int,
) -> _Kernel:
    B = len(prompts)
    ar = xp.arange(B)
    mmax = max(p.Q.shape[0] for p in prompts)
    Qn = [xp.scale(p.Q, _inv(p.sqq, normalize)) for p in prompts]  # normalised targets

    if shared is not None:
        X, K = shared.X, shared.X.shape[0]
        T = xp.f64(_pad(xp, Qn, mmax) @ X.T)  # (B, M, K)
        sqx = xp.f64(shared.sqx)[None, :] + xp.zeros((B, K), "f64")
        if gram is None:
            gram = _shared_gram(xp, K, n)
        G = X @ X.T if gram else None  # computed once for the whole batch (syrk on numpy)

        def shared_col(j: Array, jf: Array) -> Array:
            return xp.cat([xp.f64(G[j] if G is not None else X[j] @ X.T), T[ar, :, j]], 1)

        return _Kernel(shared_col, xp.f64(T), sqx, None)  # C: own copy, T stays intact

    ks = [p.X.shape[0] for p in prompts]
    kmax = max(ks)
    sqx = _pad(xp, [xp.f64(p.sqx) for p in prompts], kmax)  # (B, K); pads 0
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
        GT = _gram_blocks(xp, [p.X for p in prompts], Qn, kmax, mmax)
        C0 = xp.f64(GT[:, :, kmax:].swapaxes(1, 2))

        def gram_col(j: Array, jf: Array) -> Array:
            return xp.rows(GT, jf)

        return _Kernel(gram_col, C0, sqx, valid)

    Xpad = _pad(xp, [p.X for p in prompts], kmax)
    Qpad = _pad(xp, Qn, mmax)
    C0 = xp.f64(Qpad @ Xpad.swapaxes(1, 2))

    def matvec_col(j: Array, jf: Array) -> Array:
        xj = Xpad[ar, j][:, :, None]  # (B, d, 1)
        return xp.cat([(Xpad @ xj)[:, :, 0], (Qpad @ xj)[:, :, 0]], 1)

    return _Kernel(matvec_col, C0, sqx, valid)


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
    # is about one L2 keep that traffic in cache, yet are wide enough to amortise each numpy call
    # (B=64, K=200, n=50: 32 prompts a chunk measured best, a few % ahead of 13 or 64).
    # With shared candidates and mat-vec columns, though, each step reads all of X once per
    # chunk: there wide chunks win (B=64, K=3000: ~3× faster than L2-sized ones), up to a cap
    # on W's memory.
    chunk = len(prompts)
    if not xp.torch:
        w_row = 8 * n * (kmax + max(ms))  # bytes of W per prompt
        chunk = max(1, _CPU_CHUNK_BYTES // w_row)
        if shared is not None and not (gram if gram is not None else _shared_gram(xp, kmax, n)):
            chunk = max(chunk, _SHARED_CHUNK_BYTES // w_row)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    stop = current_check()  # cancellation (gRPC calls): between chunks and between picks
    with single_thread_blas():
        for lo in range(0, len(prompts), chunk):
            if stop is not None:
                stop()
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
    """The greedy with raw candidates: kernel columns are used as fetched, never rescaled.

    With r_j = 1/‖x_j‖ and D = diag(r) on the candidates, the normalised kernel is D·K̃·D, and
    conditioning on x_j with noise λ equals conditioning the raw kernel with noise
    λ_j = λ/r_j² = λ‖x_j‖², then scaling by D. SIFT's gain Σₜ Σ[t,j]²/(Σ[j,j]+λ) thus reads
    Σₜ Σ̃[t,j]²/(Σ̃[j,j]+λ_j), with Σ̃ the covariance over raw candidates and normalised targets:
    the same numbers up to rounding, with fewer passes per pick. The state: ``W`` rows
    wᵢ = Σ̃ᵢ₋₁[:, jᵢ]/√(Σ̃ᵢ₋₁[jᵢ,jᵢ]+λ_jᵢ), ``dl`` = Σ̃[j,j]+λ_j, ``C`` = Σ̃[t,j], ``tv``.
    """
    B, mmax = len(prompts), max(ms)
    ker = _kernels(xp, prompts, shared, normalize, gram, n)
    ar = xp.arange(B)
    C = ker.C
    lamj = ker.sqx * lam if normalize else ker.sqx * 0 + lam  # (B, K) λ_j
    if ker.valid is not None:
        lamj[~ker.valid] = lam  # padded candidates: dl = λ > 0 (gain 0, then masked)
    dl = ker.sqx + lamj
    tv = xp.zeros((B,), "f64")
    for b, (m, p) in enumerate(zip(ms, prompts, strict=True)):
        tv[b] = float(m) if normalize else float(p.sqq.sum())
    width = kmax + mmax
    W = xp.zeros((B, n, width), "f64")
    picks = xp.zeros((B, n), "i64")
    var = xp.zeros((B, n), "f64")
    pen = None  # additive gain penalty: −∞ for padding and (with unique) picked candidates
    if ker.valid is not None or unique:
        pen = xp.zeros((B, kmax), "f64")
        if ker.valid is not None:
            pen[~ker.valid] = -np.inf
    order_arr = None
    if orders is not None:
        order_arr = torch.from_numpy(orders).to(xp.device) if xp.torch else orders
    row0 = ar * kmax  # flat offsets: (b, j) → b·K + j in (B, K) arrays
    w_at = (ar * (n * width))[:, None] + xp.arange(n)[None, :] * width  # W[b, i, 0] flat
    single = mmax == 1
    c = C[:, 0] if single else None  # (B, K) view: the one target's Σ̃[t, j]
    gain = xp.zeros((B, kmax), "f64")
    tmp = xp.zeros((B, kmax), "f64")
    stop = current_check()
    for i in range(n):
        if stop is not None:
            stop()
        if order_arr is not None:
            j = order_arr[:, i]
        else:
            if single:
                xp.mul(c, c, gain)
            else:
                gain = (C * C).sum(1)
            gain /= dl
            if pen is not None:
                gain += pen
            j = gain.argmax(1)
        jf = j + row0
        # 1/√(Σ̃[j,j] + λ_j) from the tracked diagonal (Σ̃[j,j] ≥ 0 up to rounding)
        inv = xp.maximum(xp.take(dl, jf), xp.take(lamj, jf)) ** -0.5
        w = W[:, i]  # wᵢ = (k̃(·, x_j) − Σ_{i'<i} w_{i'} w_{i'}[j]) · inv
        xp.mul(ker.column(j, jf), inv[:, None], w)
        if i:
            a = xp.take(W, w_at[:, :i] + j[:, None]) * inv[:, None]  # W[b, :i, j_b]·inv
            w -= (a[:, None, :] @ W[:, :i])[:, 0]
        wc = w[:, :kmax]
        xp.mul(wc, wc, tmp)
        dl -= tmp
        if single:
            wt0 = w[:, kmax]
            xp.mul(wc, wt0[:, None], tmp)
            c -= tmp
            tv -= wt0 * wt0
        else:
            wt = w[:, kmax:]
            C -= wt[:, :, None] * wc[:, None, :]
            tv -= (wt * wt).sum(1)
        var[:, i] = tv
        picks[:, i] = j
        if unique and pen is not None:  # pen is set whenever unique is
            pen[ar, j] = -np.inf
    var = var.clip(min=0.0)
    picks_np, var_np = xp.numpy(picks), xp.numpy(var)
    return [(picks_np[b].copy(), var_np[b].copy()) for b in range(B)]
