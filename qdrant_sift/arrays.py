"""The one rule for the arrays a caller hands in (queries, candidates, embeddings, vectors).

:func:`as_float32_matrix` is what every torch-free entry point uses (the stores, ``rerank()``
and the RAG adapters, ``RemoteReranker``); the in-process selector applies :func:`check_shape`
and :func:`array_of_numbers` before converting to its compute dtype. So the same bad array is
refused with the same class everywhere, before any work starts. Torch-free: a tensor is
recognised by its ``detach`` method.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qdrant_sift.errors import InvalidInputError, NonFiniteError

__all__ = [
    "CACHE_LINE",
    "aligned_empty",
    "array_of_numbers",
    "as_float32_matrix",
    "check_kind",
    "check_shape",
]

#: Bytes in a cache line: where the compiled SIFT loop wants a matrix's rows to start (it copies
#: one that does not), so arrays made for it start on one.
CACHE_LINE = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A new, uninitialised C-contiguous array whose first byte starts a cache line (numpy's own
    start 16 bytes in, by the allocator's whim): the store gathers recalled rows into one, so the
    selection that reads them needs no aligned copy of its own."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    out: np.ndarray = raw[start : start + nbytes].view(dt).reshape(shape)
    return out


def check_shape(
    shape: tuple[int, ...], name: str, *, allow_vector: bool, allow_empty: bool = False
) -> None:
    """``allow_vector``: (d,) or (m, d) with d ≥ 1 (m ≥ 1 unless ``allow_empty``); otherwise a
    (K, d) matrix, where K = 0 (also as shape (0,)) is allowed."""
    if allow_vector:
        if len(shape) not in (1, 2):
            raise InvalidInputError(f"{name} must be (d,) or (m, d), got shape {shape}")
        if shape[-1] == 0:
            raise InvalidInputError(f"{name} has dimension d = 0")
        if len(shape) == 2 and shape[0] == 0 and not allow_empty:
            raise InvalidInputError(f"{name} holds no vectors (shape {shape}); pass at least one")
    elif len(shape) != 2 and not (len(shape) == 1 and shape[0] == 0):
        raise InvalidInputError(
            f"{name} must be 2-D (K, d), got shape {shape}; wrap a single vector as (1, d)"
        )


def check_kind(arr: np.ndarray, name: str) -> None:
    """Real numbers only (no bools, complex, strings or objects)."""
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {arr.dtype}")


def array_of_numbers(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)`` holding real numbers (ragged lists and strings are refused)."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{name} is not an array of numbers: {exc}") from exc
    check_kind(arr, name)
    return arr


def as_float32_matrix(
    x: Any,
    name: str,
    *,
    allow_vector: bool = True,
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """numpy / torch / nested lists -> C-contiguous (rows, d) float32 (a (d,) vector becomes one
    row), refused with :class:`InvalidInputError` for a bad kind or shape and with
    :class:`NonFiniteError` for NaN or infinity (unless ``finite=False``: the server checks)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = array_of_numbers(x, name)
    check_shape(arr.shape, name, allow_vector=allow_vector, allow_empty=allow_empty)
    out = arr.astype(np.float32, copy=False)
    if out.ndim == 1:
        out = out[None, :] if allow_vector else out.reshape(0, 0)
    if finite and not np.isfinite(out).all():
        raise NonFiniteError(f"{name} holds NaN or infinity")
    return np.ascontiguousarray(out)
