"""Public selection API: :func:`select`, :func:`select_batch` and :class:`Selection`.

:mod:`._local`'s ``LocalReranker`` binds them to a device and dtype.

Routing: a single prompt on the CPU runs the lean numpy engine (:mod:`._sift_np`, the lowest
per-pick overhead); batches, and single prompts on CUDA, run the batched engine
(:mod:`._sift_batch`, one vectorised program per batch: numpy on the CPU, torch on CUDA), except
that a CPU batch with K ≤ GRAM_MAX_K runs the single-prompt engine per prompt when its compiled
pick loop is available (numba; see :mod:`._sift_compiled`; prompts sharing one candidate set
read one table of its kernel rows). The
baselines compute their order on the CPU (a sort or an n-step scan); SIFT's posterior variances
of their picks come, for a single CPU prompt, from one n×n Cholesky factor of the picks
(:func:`._baselines.replay_variances`, O(n²·d + n³), so ``nearest`` costs what a top-n costs:
O(K·d) for the relevance plus the factor) and, in batches, from replaying the order through the
batched engine. Such a CPU batch runs its prompts on a few threads (:mod:`._parallel`).

The common call (one CPU prompt, numpy float32 input, default options) is checked as fully as
any other but cheaply: its checked options are reused per n, conversion is a no-op, the norms'
finiteness is one reduction, and the engine's fresh arrays are frozen, not copied
(:mod:`._selection`); only the accepting path is shortened, so bad input meets the same checks
and the same typed errors.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from qdrant_sift.errors import ConfigError, DimensionMismatchError, InvalidInputError
from qdrant_sift.options import DEFAULTS, SelectOptions

from ._baselines import REPLAY_MAX_N, baseline_order, replay_variances
from ._blas import single_thread_blas
from ._checks import batch_dims_message, is_per_prompt
from ._parallel import check_threads, run_indexed
from ._protocol import Reranker
from ._selection import Selection, finish, prior_of
from ._sift_batch import BatchInput, greedy_batch
from ._sift_compiled import kernel_table
from ._sift_np import GRAM_MAX_K, aligned_input, compiled_covers, greedy_numpy, greedy_once
from ._validate import (
    STRATEGIES,
    Options,
    as_numpy_matrix,
    as_torch_matrix,
    checked_options,
    compute_dtype,
    resolve_device,
    row_sqnorms_numpy,
    row_sqnorms_torch,
)

__all__ = ["STRATEGIES", "Reranker", "Selection", "select", "select_batch"]


def _check_sizes(k: int, d_q: int, d_x: int, opts: Options, where: str = "") -> None:
    if k > 0 and d_q != d_x:
        raise DimensionMismatchError(
            f"{where}query has dimension {d_q} but candidates have dimension {d_x}"
        )
    if k == 0 and opts.n > 0:
        raise InvalidInputError(f"{where}no candidates to select {opts.n} from (K = 0)")
    if opts.n > k and not SelectOptions(strategy=opts.strategy, unique=opts.unique).repeats:
        why = "unique=True" if opts.strategy == "sift" else f"strategy {opts.strategy!r}"
        raise ConfigError(
            f"{where}cannot pick n={opts.n} distinct candidates out of K={k} ({why} never "
            f"repeats); pass n=min(n, K) or use strategy='sift' with repeats"
        )


def _select_cpu(query: Any, candidates: Any, opts: Options, dtype: torch.dtype) -> Selection:
    if opts.strategy == "sift" and dtype is torch.float32:  # the common case: one compiled call
        once = greedy_once(query, candidates, opts.n, opts.lam, opts.normalize, opts.unique,
                           opts.alpha)  # fmt: skip
        if once is not None:
            return finish(once[0], once[1], once[2], opts, once[3])
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    Q = as_numpy_matrix(query, "query", np_dtype, allow_vector=True)
    X = as_numpy_matrix(candidates, "candidates", np_dtype, allow_vector=False)
    K = X.shape[0]
    _check_sizes(K, Q.shape[1], X.shape[1], opts)
    sqq = row_sqnorms_numpy(Q, "query", opts.normalize)
    sqx = row_sqnorms_numpy(X, "candidates", opts.normalize)
    with single_thread_blas() if K <= GRAM_MAX_K else nullcontext():
        order = None
        if opts.strategy != "sift":
            order = baseline_order(
                opts.strategy,
                X,
                sqx,
                Q,
                sqq,
                opts.n,
                normalize=opts.normalize,
                diversity=opts.diversity,
                seed=opts.seed,
            )
        if order is not None and order.size <= REPLAY_MAX_N:
            # a baseline's fixed order: its variances in O(n²·d + n³), not the greedy's n·K·d
            var = replay_variances(X, sqx, Q, sqq, order, lam=opts.lam, normalize=opts.normalize)
            if var is not None:
                return finish(order, var, prior_of(sqq, opts.normalize), opts)
        idx, var, prior, stopped = greedy_numpy(
            X,
            sqx,
            Q,
            sqq,
            n=opts.n,
            lam=opts.lam,
            normalize=opts.normalize,
            unique=opts.unique,
            alpha=opts.alpha,
            order=order,
        )
    return finish(idx, var, prior, opts, stopped)


def _as_input(
    x: Any,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    allow_vector: bool,
    normalize: bool,
) -> tuple[Any, Any]:
    """Array + float64 squared norms: numpy on the CPU (zero-copy), torch tensors on CUDA."""
    if device.type == "cpu":
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        arr = as_numpy_matrix(x, name, np_dtype, allow_vector=allow_vector)
        return arr, row_sqnorms_numpy(arr, name, normalize)
    t = as_torch_matrix(x, name, device, dtype, allow_vector=allow_vector)
    return t, row_sqnorms_torch(t, name, normalize)


def _prepare(
    query: Any,
    candidates: Any,
    device: torch.device,
    dtype: torch.dtype,
    normalize: bool,
    where: str,
) -> BatchInput:
    Q, sqq = _as_input(
        query, f"{where}query", device, dtype, allow_vector=True, normalize=normalize
    )
    X, sqx = _as_input(
        candidates, f"{where}candidates", device, dtype, allow_vector=False, normalize=normalize
    )
    return BatchInput(X=X, sqx=sqx, Q=Q, sqq=sqq)


def _numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


def _baseline_orders(prompts: list[BatchInput], cands: list[BatchInput], opts: Options) -> Any:
    orders = [
        baseline_order(
            opts.strategy,
            _numpy(c.X),
            _numpy(c.sqx),
            _numpy(p.Q),
            _numpy(p.sqq),
            opts.n,
            normalize=opts.normalize,
            diversity=opts.diversity,
            seed=opts.seed,
        )
        for p, c in zip(prompts, cands, strict=True)
    ]
    return np.stack(orders)


def _compiled_each(prompts: list[BatchInput]) -> bool:
    """Whether a CPU batch runs as one compiled selection per prompt instead of the vectorised
    numpy program, for K ≤ GRAM_MAX_K: with per-prompt candidates each prompt's kernel rows are
    its own work, which no batching saves, and the compiled loop adds only a fraction to them
    (B=64, K=200, N=50, d=384, Gram block: 0.35 ms a prompt against 0.47 ms vectorised); with
    shared candidates the prompts read one table of kernel rows (:func:`kernel_table`; each
    prompt's ``X`` is then the shared matrix)."""
    return not isinstance(prompts[0].X, torch.Tensor) and all(
        compiled_covers(p.X.shape[0]) for p in prompts
    )


def _greedy_prompt(
    p: BatchInput, opts: Options, order: np.ndarray | None, table: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One prompt of a per-prompt batch, checked already: :func:`greedy_once` where it applies
    (it recomputes the norms, 2 % of its work, with the same bits; the least Python under the
    GIL per prompt), else :func:`greedy_numpy`; either way :func:`select`'s very picks."""
    if order is None and table is None:
        once = greedy_once(p.Q, p.X, opts.n, opts.lam, opts.normalize, opts.unique, None)
        if once is not None:
            return once[0], once[1]
    idx, var, _, _ = greedy_numpy(
        p.X,
        p.sqx,
        p.Q,
        p.sqq,
        n=opts.n,
        lam=opts.lam,
        normalize=opts.normalize,
        unique=opts.unique,
        order=order,
        table=table,
    )
    return idx, var


def _greedy_each(
    prompts: list[BatchInput],
    opts: Options,
    orders: np.ndarray | None,
    threads: int = 1,
    table: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_greedy_prompt` per prompt, on up to ``threads`` threads (:mod:`._parallel`),
    BLAS capped once around them all; ``table``: the shared candidates' kernel rows, computed
    once for all prompts."""

    def one(b: int) -> tuple[np.ndarray, np.ndarray]:
        return _greedy_prompt(prompts[b], opts, None if orders is None else orders[b], table)

    with single_thread_blas():
        return run_indexed(one, len(prompts), threads)


def _run_batch(
    prompts: list[BatchInput], shared: BatchInput | None, opts: Options, threads: int = 1
) -> list[Selection]:
    cands = [shared] * len(prompts) if shared is not None else prompts
    orders = _baseline_orders(prompts, cands, opts) if opts.strategy != "sift" else None
    if _compiled_each(prompts):
        table = None
        if shared is not None:  # one aligned copy, and one table when the prompts need > K rows
            xs = aligned_input(shared.X)
            prompts = [BatchInput(X=xs, sqx=shared.sqx, Q=p.Q, sqq=p.sqq) for p in prompts]
            k = xs.shape[0]
            if len(prompts) * min(opts.n, k) > k:
                table = kernel_table(xs)
        out = _greedy_each(prompts, opts, orders, threads, table)
    else:
        out = greedy_batch(
            prompts,
            shared,
            n=opts.n,
            lam=opts.lam,
            normalize=opts.normalize,
            unique=opts.unique,
            orders=orders,
        )
    return [
        finish(idx, var, prior_of(_numpy(p.sqq), opts.normalize), opts)
        for (idx, var), p in zip(out, prompts, strict=True)
    ]


def select(
    query: Any,
    candidates: Any,
    n: int,
    *,
    strategy: str = DEFAULTS.strategy,
    lam: float = DEFAULTS.lam,
    alpha: float | None = DEFAULTS.alpha,
    unique: bool = DEFAULTS.unique,
    normalize: bool = DEFAULTS.normalize,
    device: Any = None,
    dtype: Any = torch.float32,
    diversity: float = DEFAULTS.diversity,
    seed: int | None = DEFAULTS.seed,
    options: SelectOptions | None = None,
) -> Selection:
    """Pick ``n`` of the K ``candidates`` for ``query`` (one (d,) vector or m targets (m, d)).

    ``strategy`` is ``"sift"`` (exact greedy SIFT, repeats allowed unless ``unique``),
    ``"nearest"``, ``"mmr"`` (``diversity`` ∈ [0, 1], 0 = pure relevance) or ``"random"``
    (``seed``). ``lam`` is SIFT's noise variance λ; ``alpha`` enables adaptive stopping (keep
    pick i while α·i·σᵢ ≤ 1; the prefix is cut at the first violation and ``stopped_early`` is
    set; it applies to every strategy). SIFT may pick a candidate again (n > K is fine); the
    baselines are rankings, so they, and ``unique=True``, need n ≤ K (else :class:`ConfigError`).
    Ties go to the lowest index. Inputs are numpy arrays, torch tensors or nested lists of any
    real dtype; ``dtype`` (float32/float64) is the precision of the kernel products, the greedy
    itself always runs in float64. ``device=None`` uses CUDA when present. ``options``: a
    :class:`~qdrant_sift.options.SelectOptions` instead of the option keywords.
    Bad input raises a :class:`~qdrant_sift.errors.InvalidInputError` subclass.
    """
    opts = checked_options(n, options, strategy, lam, alpha, unique, normalize, diversity, seed)
    dev = resolve_device(device)
    tdt = compute_dtype(dtype)
    if dev.type == "cpu":
        return _select_cpu(query, candidates, opts, tdt)
    p = _prepare(query, candidates, dev, tdt, opts.normalize, "")
    k = p.X.shape[0]
    _check_sizes(k, p.Q.shape[1], p.X.shape[1], opts)
    return _run_batch([p], None, opts)[0]


def select_batch(
    queries: Any,
    candidates: Any,
    n: int,
    *,
    strategy: str = DEFAULTS.strategy,
    lam: float = DEFAULTS.lam,
    alpha: float | None = DEFAULTS.alpha,
    unique: bool = DEFAULTS.unique,
    normalize: bool = DEFAULTS.normalize,
    device: Any = None,
    dtype: Any = torch.float32,
    diversity: float = DEFAULTS.diversity,
    seed: int | None = DEFAULTS.seed,
    options: SelectOptions | None = None,
    threads: int | None = None,
) -> list[Selection]:
    """:func:`select` for many prompts at once; results in input order.

    ``queries`` is a sequence of (d,) / (m, d) queries (a 2-D array is read as B single-target
    prompts). ``candidates`` is either one (K, d) matrix shared by every prompt or one (Kᵢ, d)
    matrix per prompt (a sequence, or a (B, K, d) array); ragged K and m are padded and masked,
    and the whole batch runs as one tensor program on ``device``, except that on the CPU,
    with the compiled loop and K ≤ 2048, the batch runs one compiled selection per prompt (the
    very selection :func:`select` makes where it computes its own kernel rows), on up to
    ``threads`` threads at once (default None: the CPUs this process may use, its affinity mask
    capped by a cgroup quota; 1: serial). ``threads`` is an execution detail, not a
    :class:`~qdrant_sift.options.SelectOptions` field: the selections are the same for every
    value (see :mod:`._parallel`); it must be an int ≥ 1 or None (else :class:`ConfigError`).
    """
    nthreads = check_threads(threads)
    opts = checked_options(n, options, strategy, lam, alpha, unique, normalize, diversity, seed)
    dev = resolve_device(device)
    tdt = compute_dtype(dtype)
    if isinstance(queries, (str, bytes)) or not hasattr(queries, "__len__"):
        raise InvalidInputError("queries must be a sequence of query vectors or matrices")
    qs = list(queries)
    if not qs:
        return []
    per_prompt = is_per_prompt(candidates)
    if per_prompt and len(candidates) != len(qs):
        raise InvalidInputError(
            f"got {len(qs)} queries but {len(candidates)} candidate sets; pass one per query "
            "or one shared (K, d) matrix"
        )
    shared = None
    if not per_prompt:
        X, sqx = _as_input(
            candidates, "candidates", dev, tdt, allow_vector=False, normalize=opts.normalize
        )
        shared = BatchInput(X=X, sqx=sqx, Q=X[:0], sqq=sqx[:0])

    prompts: list[BatchInput] = []
    for b, q in enumerate(qs):  # every prompt is checked before any selection starts
        # (serially: the checks hold the GIL, so threads would only take turns at them)
        where = f"queries[{b}]: "
        if per_prompt:
            p = _prepare(q, candidates[b], dev, tdt, opts.normalize, where)
        else:
            assert shared is not None
            Q, sqq = _as_input(
                q, f"{where}query", dev, tdt, allow_vector=True, normalize=opts.normalize
            )
            p = BatchInput(X=shared.X, sqx=shared.sqx, Q=Q, sqq=sqq)
        k = p.X.shape[0]
        _check_sizes(k, p.Q.shape[1], p.X.shape[1], opts, where)
        if prompts and p.Q.shape[1] != prompts[0].Q.shape[1]:
            raise DimensionMismatchError(batch_dims_message(b, p.Q.shape[1], prompts[0].Q.shape[1]))
        prompts.append(p)
    return _run_batch(prompts, shared, opts, nthreads)
