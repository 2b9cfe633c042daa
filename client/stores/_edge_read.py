"""The reads of an :class:`~._edge.EdgeStore`: a recall's batch of queries, ``retrieve`` and
``scroll``.

A recall asks the engine for ids, scores and (if wanted) payloads, and takes the rows from the
vector cache (:mod:`._edge_vcache`), or from the engine where the cache is off or lacks them.
Apart from :mod:`._edge` (creation, writes, life cycle) so that each reads as one concern.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._edge_shard import edge_ids
from ._edge_vcache import EdgeCacheBase
from ._ef import query_ef
from ._filters import native_filter, to_edge
from ._hits import OPPOSITE_PROBE_EF, Hits, PointId
from ._points import StoredPoint, normalize_id, normalize_ids, records_by_id
from ._vcache import int_keys

__all__ = ["EdgeReadBase"]


class EdgeReadBase(EdgeCacheBase):
    """The store's reads (a base of :class:`~._edge.EdgeStore`)."""

    #: ``hnsw_ef`` of a both-directions recall's −q probe (see ``OPPOSITE_PROBE_EF``)
    opposite_probe_ef = OPPOSITE_PROBE_EF

    def _native_filter(self, filter: Any) -> Any:
        import qdrant_edge as qe

        return native_filter(filter, to_edge, qe.Filter, "EdgeStore", "qdrant_edge.Filter")

    def _search(
        self,
        queries: list[np.ndarray],
        k: int,
        filter: Any,
        params: dict[str, Any],
        kernel: bool,
        vectors: Sequence[bool] | None = None,
        limits: Sequence[int] | None = None,
        with_payload: bool = True,
    ) -> list[Hits]:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout()
        exact = bool(params.get("exact", False))
        flt = self._native_filter(filter)
        rows = [True] * len(queries) if vectors is None else list(vectors)
        tops = [k] * len(queries) if limits is None else list(limits)
        cache = self._cache()
        engine_vectors = lay.with_vector(kernel) if cache is None else False
        reqs = [
            qe.QueryRequest(
                limit=top,
                query=qe.Query.Nearest(q.tolist(), using=lay.using),
                filter=flt,
                params=qe.SearchParams(
                    hnsw_ef=params.get("hnsw_ef") or self._ef(top, full, k), exact=exact
                ),
                with_vector=engine_vectors if full else False,
                with_payload=full and with_payload,
            )
            for q, full, top in zip(queries, rows, tops, strict=True)
        ]
        with self._engine("query"):
            res = shard.query_batch(qe.QueryBatchRequest(reqs))
        out: list[Hits] = []
        for r, full in zip(res, rows, strict=True):
            if full and cache is None:
                out.append(self._hits(r, kernel, payloads=with_payload))
                continue
            ids = [p.id for p in r]
            scores = np.asarray([p.score for p in r], np.float32)
            pls: list[dict[str, Any]] = []  # the −q probe reads ids and scores only
            if full:
                pls = [p.payload or {} for p in r] if with_payload else [{} for _ in ids]
            if full and ids and type(ids[0]) is uuid.UUID:
                hits = self._cached_uuid_hits(ids, scores, pls, kernel)
                if hits is not None:
                    out.append(hits)
                    continue
            keys = int_keys(ids)  # the engine's ints need no normalising; the cache reuses them
            if keys is None:
                ids = [normalize_id(i) for i in ids]
            if not full:
                out.append(Hits(ids, scores, None, []))
            else:
                out.append(self._cached_hits(ids, scores, pls, kernel, with_payload, keys))
        return out

    def _ef(self, top: int, full: bool, k: int) -> int:
        """Default ``hnsw_ef`` of one query of a batch: the −q probe (ids only, fewer than k
        asked) at ``opposite_probe_ef``, everything else at ``default_ef``."""
        return query_ef(top, full, k, self.opposite_probe_ef)

    def retrieve(self, ids: Sequence[PointId], with_vectors: bool = True) -> list[StoredPoint]:
        shard = self._require()
        norm = list(dict.fromkeys(normalize_ids(ids)))
        if not norm:
            return []
        lay = self._load_layout() if with_vectors else None
        with self._engine("retrieve"):
            recs = shard.retrieve(
                edge_ids(norm), with_payload=True,
                with_vector=lay.with_vector(False) if lay else False,
            )  # fmt: skip
        by_id = records_by_id(recs)
        return [
            StoredPoint(
                i,
                np.asarray(lay.recall_of(by_id[i].vector), np.float32) if lay else None,
                by_id[i].payload or {},
            )
            for i in norm
            if i in by_id
        ]

    def scroll(
        self,
        batch_size: int = 1000,
        with_vectors: bool = False,
        filter: Any = None,
        payload_keys: Sequence[str] | None = None,
    ) -> Iterator[StoredPoint]:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout() if with_vectors else None
        want = lay.with_vector(False) if lay else False
        flt = self._native_filter(filter)
        payload: Any = True if payload_keys is None else list(payload_keys)
        offset: Any = None
        while True:
            with self._engine("scroll"):
                recs, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=batch_size, filter=flt, with_payload=payload,
                        with_vector=want,
                    )
                )  # fmt: skip
            for r in recs:
                vec = np.asarray(lay.recall_of(r.vector), np.float32) if lay else None
                yield StoredPoint(normalize_id(r.id), vec, r.payload or {})
            if offset is None:
                return
