"""What a store's search hands back, and how a both-directions recall merges q's and −q's.

:class:`Hits` is one backend answer (ids, scores, rows); :func:`merge_directions` keeps the K
largest |scores| of q's and −q's hits, reading rows only for the −q ids it keeps, once
:func:`opposite_probe_settles` has said whether −q's small probe is enough. Kept apart from
the store contract (:mod:`._base`): both backends build and merge hits the same way.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "OPPOSITE_PROBE",
    "OPPOSITE_PROBE_EF",
    "Fetch",
    "Hits",
    "PointId",
    "all_ints",
    "merge_directions",
    "opposite_probe_settles",
]

PointId = str | int

_INT = {int}


def all_ints(ids: Iterable[Any]) -> bool:
    """Whether every id is a Python int (a bool or numpy integer is not), in one C-level pass:
    the engines' ids and ours are, and then need no per-id normalising."""
    return set(map(type, ids)) == _INT


@dataclass(frozen=True)
class Hits:
    """One backend answer, best first; vectors already one (n, d) float32 array.

    ``vectors`` None: ids and scores only (no vectors, payloads or kernels were read), as the
    second direction of a both-directions recall is asked; :func:`merge_directions` then fetches
    rows only for the ids it keeps from it.
    """

    ids: list[PointId]
    scores: np.ndarray
    vectors: np.ndarray | None
    payloads: list[dict[str, Any]]
    kernel_vectors: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        ids: list[PointId],
        scores: list[float],
        vectors: list[Any],
        payloads: list[dict[str, Any]],
        dim: int,
        kernels: list[Any] | None = None,
        kernel_dim: int | None = None,
    ) -> Hits:
        """From backend lists; converting all vectors in one call is several times faster."""
        kvecs = None if kernels is None or kernel_dim is None else _rows(kernels, kernel_dim)
        scores_ = np.asarray(scores, dtype=np.float32)
        return cls(ids, scores_, _rows(vectors, dim), payloads, kvecs)


def _rows(vectors: list[Any], dim: int) -> np.ndarray:
    """Rows of Python floats as one writable (n, dim) float32 array.

    ``struct`` packs a row of floats in one C loop, 2-3× faster than ``np.asarray`` on the
    list of lists (which discovers shapes and types element by element): 0.7 ms vs 1.7 ms
    for 200 × 384. Same rounding (to nearest); anything it refuses takes numpy's path.
    """
    if not vectors:
        return np.zeros((0, dim), np.float32)
    try:
        pack = _packer(dim).pack
        buf = bytearray(b"".join([pack(*v) for v in vectors]))
    except (struct.error, OverflowError, TypeError):  # wrong length, beyond float32, not floats
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim)
    return np.frombuffer(buf, np.float32).reshape(len(vectors), dim)


@functools.lru_cache(maxsize=8)
def _packer(dim: int) -> struct.Struct:
    return struct.Struct(f"={dim}f")


#: Fetches the stored rows (vectors, payloads, kernels if recalled) of ids, in their order;
#: ids no longer stored are left out.
Fetch = Callable[[list[PointId]], Hits]


def _no_rows(like: Hits) -> Hits:
    kern = None if like.kernel_vectors is None else like.kernel_vectors[:0]
    assert like.vectors is not None
    return Hits([], like.scores[:0], like.vectors[:0], [], kern)


def _pos_wins(pos: Hits, neg: Hits, k: int) -> bool:
    """Whether the merge keeps exactly q's first k hits, in q's order: q has k of them, sorted
    and none negative (so |score| order is their order), each beating every −q hit strictly."""
    if len(pos.ids) < k or pos.vectors is None or k == 0:
        return False
    head = pos.scores[:k]
    floor = float(head[-1])
    return (
        floor >= 0.0
        and bool(np.all(head[:-1] >= head[1:]))
        and (neg.scores.size == 0 or floor > float(np.abs(neg.scores).max()))
    )


#: Hits of −q asked first in a both-directions recall (a probe at a small ``hnsw_ef``); more
#: only when every one of them could still enter the merge (:func:`opposite_probe_settles`).
OPPOSITE_PROBE = 16
#: ``hnsw_ef`` of that probe (both stores, ``query_ef``). The probe only has to show
#: that −q's 16th best hit scores below the least of q's K (by ~0.4 cosine on the benchmark's
#: data, clustered and cone alike, 20 of 20 queries at ef 8 to 64); at ef = 16 it costs ~5 % of
#: q's own top-200 search instead of ~40 % at ef = 64 (100k × 384, bench_store). A probe that
#: cannot settle it is followed by the full −q search at ``max(k, 64)`` as before.
OPPOSITE_PROBE_EF = 16


def opposite_probe_settles(pos: Hits, probe: Hits, k: int, limit: int) -> bool:
    """Whether −q's best ``limit`` hits hold every −q hit the merge could keep.

    −q's hits come best first, so one beyond the probe scores at most the probe's last. The
    merge keeps the k largest |score| of q's and −q's hits; q alone already has k hits of
    |score| ≥ the least of theirs, m, and ties go to q's. So a probe whose last hit scores
    below m (or that found fewer than ``limit`` hits: there are no more) settles it; a −q hit
    of negative score is a point q scores above m, which q's own search holds."""
    if len(probe.ids) < limit:
        return True
    if len(pos.ids) < k:
        return False
    least = float(np.abs(pos.scores[:k]).min())
    return float(probe.scores[limit - 1]) < least


def merge_directions(pos: Hits, neg: Hits, k: int, fetch: Fetch | None = None) -> Hits:
    """Union of the hits for q and −q (scores of −q hits negated), K largest |score|, no dupes.

    ``neg`` may be ids and scores only (``vectors`` None): the rows of the ids kept from it,
    usually few, come from ``fetch`` (an id deleted in between is left out).
    """
    if _pos_wins(pos, neg, k):  # every kept hit is q's own, in q's order (the usual case)
        kern = None if pos.kernel_vectors is None else pos.kernel_vectors[:k]
        assert pos.vectors is not None
        return Hits(pos.ids[:k], pos.scores[:k], pos.vectors[:k], pos.payloads[:k], kern)
    ids = pos.ids + neg.ids
    scores = np.concatenate([pos.scores, -neg.scores])
    seen: set[PointId] = set()
    keep: list[int] = []
    for j in np.argsort(-np.abs(scores), kind="stable"):
        pid = ids[j]
        if pid not in seen:
            seen.add(pid)
            keep.append(int(j))
            if len(keep) == k:
                break
    take = keep
    if neg.vectors is None:  # fetch the rows of the ids kept from −q, then index into them
        n_pos = len(pos.ids)
        wanted = [ids[j] for j in keep if j >= n_pos]
        if wanted and fetch is None:
            raise ValueError("merge_directions: neg holds no vectors and no fetch was given")
        neg = fetch(wanted) if wanted and fetch is not None else _no_rows(pos)
        row = {pid: r for r, pid in enumerate(neg.ids)}
        keep = [j for j in keep if j < n_pos or ids[j] in row]  # deleted in between: dropped
        take = [j if j < n_pos else n_pos + row[ids[j]] for j in keep]
    assert pos.vectors is not None and neg.vectors is not None
    vectors = np.concatenate([pos.vectors, neg.vectors])
    payloads = pos.payloads + neg.payloads
    kernels = None
    if pos.kernel_vectors is not None and neg.kernel_vectors is not None:
        kernels = np.concatenate([pos.kernel_vectors, neg.kernel_vectors])[take]
    return Hits(
        [ids[j] for j in keep], scores[keep], vectors[take], [payloads[j] for j in take], kernels
    )
