"""The values stores hand out and take in: the recalled :class:`Candidates`, a
:class:`StoredPoint`, point ids in their one normal form, and the checked query and vector
matrices. Apart from :mod:`._base` (the store interface), which every backend and caller of
these values need not import.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.errors import DimensionMismatchError, InvalidInputError

from ._hits import PointId, all_ints

__all__ = [
    "Candidates",
    "StoredPoint",
    "as_matrix",
    "normalize_id",
    "normalize_ids",
    "prepare_query",
    "records_by_id",
]


@dataclass(frozen=True)
class Candidates:
    """Recalled points, best first: ``ids``, ``scores`` (K,), ``vectors`` (K, d), ``payloads``.

    With ``both_directions`` the order is by ``|score|`` (an anti-correlated point is as
    informative to SIFT as a correlated one); scores keep their sign relative to the query.
    Vectors are as Qdrant stores them (unit length for cosine collections). ``kernel_vectors``
    (K, d_kernel), row for row with ``ids``, when recalled ``with_kernel``; else None.
    """

    ids: list[PointId]
    scores: np.ndarray
    vectors: np.ndarray
    payloads: list[dict[str, Any]] = field(default_factory=list)
    kernel_vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int]) -> Candidates:
        """The candidates at ``rows``, in that order, every field kept row for row."""
        rows = list(rows)
        return Candidates(
            ids=[self.ids[i] for i in rows],
            scores=self.scores[rows],
            vectors=self.vectors[rows],
            payloads=[self.payloads[i] for i in rows] if self.payloads else [],
            kernel_vectors=None if self.kernel_vectors is None else self.kernel_vectors[rows],
        )

    @classmethod
    def empty(cls, dim: int, kernel_dim: int | None = None) -> Candidates:
        kernels = None if kernel_dim is None else np.zeros((0, kernel_dim), np.float32)
        return cls([], np.zeros(0, np.float32), np.zeros((0, dim), np.float32), [], kernels)


@dataclass(frozen=True)
class StoredPoint:
    """One point as stored: id, vector (None when not requested) and payload."""

    id: PointId
    vector: np.ndarray | None
    payload: dict[str, Any]


#: A UUID in canonical form (what ``str(uuid.UUID(…))`` gives): normalised as it is.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalize_id(pid: Any) -> PointId:
    """Qdrant accepts unsigned ints and UUIDs; return ints as int and UUIDs as canonical str."""
    if type(pid) is int and pid >= 0:  # the engines' own ids: the common cases, checked first
        return pid
    if type(pid) is uuid.UUID:  # Qdrant Edge hands UUID ids out as uuid.UUID
        return str(pid)
    if type(pid) is str and len(pid) == 36 and _CANONICAL_UUID.fullmatch(pid):
        return pid  # already canonical (our own ids): no parse and format (~1.5 µs an id)
    if isinstance(pid, bool):
        raise InvalidInputError(f"point id must be an unsigned int or a UUID, got {pid!r}")
    if isinstance(pid, (int, np.integer)):
        if pid < 0:
            raise InvalidInputError(f"point id must be an unsigned int or a UUID, got {pid!r}")
        return int(pid)
    if isinstance(pid, uuid.UUID):
        return str(pid)
    if isinstance(pid, str):
        try:
            return str(uuid.UUID(pid))
        except ValueError:
            pass
    raise InvalidInputError(f"point id must be an unsigned int or a UUID string, got {pid!r}")


def normalize_ids(ids: Iterable[Any]) -> list[PointId]:
    """:func:`normalize_id` of each id, in order: unsigned ints (the usual ids) pass as they are
    after one C-level check of the lot instead of a call per id."""
    got = list(ids)
    if all_ints(got) and min(got) >= 0:
        return got
    return [normalize_id(i) for i in got]


def records_by_id(records: Sequence[Any]) -> dict[PointId, Any]:
    """An engine's records (anything with ``.id``) by their normalised ids, via
    :func:`normalize_ids` (later records win, as in a dict display)."""
    return dict(zip(normalize_ids([r.id for r in records]), records, strict=True))


def as_matrix(vectors: Any, name: str = "vectors") -> np.ndarray:
    """Validate a (n, d) float matrix (finite) and return it as contiguous float32 (the one
    array rule, :func:`qdrant_sift.arrays.as_float32_matrix`; a (d,) vector is one row)."""
    return as_float32_matrix(vectors, name, allow_vector=True, allow_empty=True)


def prepare_query(query: Any, dim: int | None) -> np.ndarray:
    """A (d,) query; a multi-vector prompt (m, d) recalls by its mean, like the reference."""
    if type(query) is np.ndarray and query.dtype == np.float32 and query.shape == (dim,):
        # the usual call: one dot shows it finite and non-zero (an overflow, NaN or underflow
        # to 0 takes the general route below, which tells them apart)
        with np.errstate(over="ignore", under="ignore"):
            energy = float(np.dot(query, query))
        if 0.0 < energy < math.inf:
            fresh: np.ndarray = query.copy()
            return fresh
    rows = as_float32_matrix(query, "query", allow_vector=True)
    q: np.ndarray = rows[0].copy() if rows.shape[0] == 1 else rows.mean(axis=0)
    if dim is not None and q.shape[0] != dim:
        raise DimensionMismatchError(f"query has dimension {q.shape[0]}, collection has {dim}")
    if not np.any(q):
        raise InvalidInputError("query is the zero vector; it has no direction to recall by")
    return q
