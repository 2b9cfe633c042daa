"""The ``hnsw_ef`` a recall's queries run at, one policy for both stores (Edge and Qdrant).

A recall of K asks HNSW for more than a plain top-50 does, and a both-directions recall adds
queries around −q; the factors below are where measured recall@K stayed high for the least time.
"""

from __future__ import annotations

from ._hits import OPPOSITE_PROBE_EF

__all__ = ["HNSW_EF_FACTOR", "HNSW_EF_MIN", "OPPOSITE_EF_FACTOR", "default_ef", "query_ef"]

#: Default ``hnsw_ef`` is this many times k, at least ``HNSW_EF_MIN`` — Qdrant's own default
#: (``ef = max(limit, ef_construct)``). ef = K kept recall@200 ≥ 0.99 on 100k × 384 (clustered
#: and cone data) and ≥ 0.95 at 1M (bench/bench_store.py's ef rows; tests/unit/
#: test_edge_ef_recall.py guards it); 2K bought ~0.005 of recall for ~0.2 ms per query.
HNSW_EF_FACTOR = 1
#: Lower bound of the default ``hnsw_ef`` of a full query (Qdrant's default ``ef_construct``).
HNSW_EF_MIN = 100
#: ``hnsw_ef`` factor of the opposite direction (−q) of a both-directions recall, whose hits count
#: only where they beat q's K-th |score|: HNSW around −q is the slow search when nothing lies
#: there (100k × 384 clustered: 2.1 ms at ef=400, 1.3 ms at ef=200, q itself 1.3 ms at 400),
#: and where something does (anti-correlated twin clusters, 20k × 384) ef = K kept the merged
#: recall@200 at 0.9997 (1.0 at 2K). Measured under load; bench/bench_store.py's ef rows.
OPPOSITE_EF_FACTOR = 1


def default_ef(k: int, full: bool) -> int:
    """``hnsw_ef`` for a top-k query: q's own, or (``full`` False) the ids-only −q query."""
    if full:
        return max(HNSW_EF_FACTOR * k, HNSW_EF_MIN)
    return max(OPPOSITE_EF_FACTOR * k, 64)


def query_ef(top: int, full: bool, k: int, probe_ef: int = OPPOSITE_PROBE_EF) -> int:
    """``hnsw_ef`` of one query of a recall batch: a both-directions recall's −q probe (ids only,
    fewer than k asked) at ``probe_ef``, everything else at :func:`default_ef` (both stores)."""
    if not full and top < k:
        return max(probe_ef, top)
    return default_ef(top, full)
