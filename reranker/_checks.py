"""Torch-free checks shared by the in-process selector and ``RemoteReranker``.

The scalar options follow :func:`qdrant_sift.options.check_options` and the arrays
:mod:`qdrant_sift.arrays`; this module adds the batch-shape rule (:func:`is_per_prompt`,
:func:`batch_dims_message`) and the query/candidates dimension check, so the remote client
refuses what :func:`~qdrant_sift.reranker.select` refuses, with the same class, before anything
is sent. Nothing here imports torch or the generated protobuf code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from qdrant_sift.arrays import array_of_numbers, check_kind, check_shape
from qdrant_sift.errors import DimensionMismatchError
from qdrant_sift.options import STRATEGIES, check_options
from qdrant_sift.options import CheckedOptions as Options

__all__ = [
    "STRATEGIES",
    "Options",
    "array_of_numbers",
    "batch_dims_message",
    "check_dims",
    "check_kind",
    "check_options",
    "check_shape",
    "is_per_prompt",
]


def batch_dims_message(b: int, d: int, d0: int) -> str:
    """The one wording, in-process and remote, of a batch whose members' dimensions differ."""
    return (
        f"queries[{b}]: query has dimension {d} but queries[0] has dimension {d0}; every "
        "member of a batch needs the same dimension"
    )


def check_dims(query: np.ndarray, candidates: np.ndarray, prefix: str = "") -> None:
    """:class:`DimensionMismatchError` unless query and candidates share d."""
    if query.shape[1] != candidates.shape[1]:
        raise DimensionMismatchError(
            f"{prefix}query has d={query.shape[1]} but candidates have d={candidates.shape[1]}"
        )


def is_per_prompt(candidates: Any) -> bool:
    """True when ``candidates`` holds one candidate set per prompt rather than one shared set.

    A 3-D array, or a sequence whose items are matrices. The local and the remote
    ``select_batch`` both decide with this, so the same input means the same thing to both.
    Duck-typed on ``ndim`` so that this module never needs torch.
    """
    ndim = getattr(candidates, "ndim", None)
    if ndim is not None:
        return bool(ndim == 3)
    if isinstance(candidates, Sequence) and len(candidates) > 0:
        first = candidates[0]
        first_ndim = getattr(first, "ndim", None)
        if first_ndim is not None:
            return bool(first_ndim == 2)
        return (
            isinstance(first, Sequence)
            and len(first) > 0
            and (isinstance(first[0], Sequence) or getattr(first[0], "ndim", 0) >= 1)
        )
    return False
