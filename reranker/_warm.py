"""Compile, before a service serves, every route of the compiled pick loop it can reach.

Why: numba compiles a specialisation of the loop on its first call with new argument types, a
few seconds each, and a compile cannot be cancelled. A server whose first Gram-block selection
(n > K/2) or first shared-candidate batch compiled inside a live call answered that call seconds
late, and a SIGTERM meanwhile could not cancel it: the drain waited for the compile (3.7 s after
SIGTERM with ``--grace 1``, where the bound is grace + 1 s). Where the on-disk cache cannot be
written (a read-only root filesystem, as deployed), every start compiled again, in live calls.

So :func:`warm_routes` makes one tiny selection per route, with the inputs in both forms a
service hands over: read-only float32 (decoded by the wire codec itself, :mod:`._matrix`) and
writable float32 (an embedder's output, a store's recall). With the cache written it loads what
was compiled before (tens of ms); without it, it compiles now, before the server says it is
ready.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._matrix import from_matrix, to_matrix

__all__ = ["warm_routes"]

_K, _D = 8, 4  # tiny: the types decide what is compiled, not the sizes


def _decoded(a: np.ndarray) -> np.ndarray:
    """``a`` through the wire codec, as the service decodes a request's matrix (read-only)."""
    rows, cols = a.shape
    return from_matrix(to_matrix(a), "warm-up", max_rows=("rows", rows), max_cols=("cols", cols))


def warm_routes(selector: Any) -> None:
    """One selection per compiled route through ``selector`` (a ``LocalReranker``), for read-only
    and writable inputs: the single call (:func:`._sift_np.greedy_once`), a Gram block (n > K/2),
    kernel rows in chunks (raw multi-target prompts, which the single call does not take), a
    batch of per-prompt candidates (checked first) and one sharing its candidates (a kernel
    table)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((_K, _D), dtype=np.float32)
    q = rng.standard_normal((2, _D), dtype=np.float32)
    for make in (np.ascontiguousarray, _decoded):
        X, Q, q1 = make(x), make(q), make(q[:1])
        selector.select(q1, X, 2)  # the single compiled call
        selector.select(q1, X, _K - 2)  # n > K/2: the Gram block
        selector.select(Q, X, 2, normalize=False)  # raw targets: kernel rows, chunked
        selector.select_batch([q1, q1], [X, X], 2)  # per-prompt candidates
        selector.select_batch([q1, q1], X, _K - 2)  # shared candidates: one kernel table
