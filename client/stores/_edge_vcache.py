"""The vector cache of an :class:`~._edge.EdgeStore`: built, mapped back, kept, saved.

The copy itself is :class:`~._vcache.VectorCache`; this is its owner's side: when it is built
(first recall, under the write lock so the scan is the shard's state), when a saved copy counts
(its token and point state, and a spot check of a few rows against the engine), how writes reach
it (rows read back from the engine, never computed here) and when it is saved (a clean close);
and the reads through it: a recall's or fetch's rows from the copy, from the engine where the
copy lacks them (or is off).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._edge_shard import EdgeShardBase, edge_ids
from ._hits import Hits, PointId, _rows
from ._points import normalize_ids, records_by_id
from ._vcache import VectorCache

__all__ = ["EdgeCacheBase"]


class EdgeCacheBase(EdgeShardBase):
    """The vector cache's owner (``vector_cache=True``): ``_vcache_on`` switches it."""

    _vcache_on: bool
    _vcache_lock: threading.Lock  # short: puts, drops and takes of in-memory rows

    def _cache(self) -> VectorCache | None:
        """The vector cache, built from the shard on first use; None when it is off."""
        if not self._vcache_on:
            return None
        cache = self._vcache
        if cache is None:
            with self._write_lock:  # no write in between: the scan is the shard's state
                if self._vcache is None:
                    self._vcache = self._saved_cache() or self._build_cache()
                cache = self._vcache
        return cache

    #: Rows of a saved copy compared with the engine's when it is mapped back
    _SPOT_CHECK = 8

    def _saved_cache(self) -> VectorCache | None:
        """The copy saved at the last clean close, if it still matches the shard: its token and
        point state, its shape, and a few rows read back from the engine bit for bit."""
        token, self._vcache_saved = self._vcache_saved, None
        if token is None:
            return None
        lay = self._load_layout()
        cache = VectorCache.load(
            self.shard_dir, token, self._state.to_json(), lay.dim, lay.kernel_dim
        )
        if cache is None:
            return None
        ids = cache.sample(self._SPOT_CHECK)
        if ids:
            got_ids, rows, krows = self._engine_rows(ids)
            held = cache.take(got_ids)
            if (
                got_ids != ids
                or held is None
                or not np.array_equal(held[0], rows)
                or (krows is not None and (held[1] is None or not np.array_equal(held[1], krows)))
            ):
                return None
        cache.changed = False
        self._vcache_token = token
        return cache

    def _rows_of(self, recs: Any) -> tuple[list[PointId], np.ndarray, np.ndarray | None]:
        lay = self._load_layout()
        ids = normalize_ids([r.id for r in recs])
        rows = _rows([lay.recall_of(r.vector) for r in recs], lay.dim)
        krows = None
        if lay.kernel_dim is not None:
            krows = _rows([lay.kernel_of(r.vector, r.id) for r in recs], lay.kernel_dim)
        return ids, rows, krows

    def _build_cache(self) -> VectorCache:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout()
        cache = VectorCache(lay.dim, lay.kernel_dim)
        want = lay.with_vector(lay.kernel_dim is not None)
        offset: Any = None
        while True:
            with self._engine("scroll"):
                recs, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=4096, with_payload=False,
                                     with_vector=want)
                )  # fmt: skip
            if recs:
                cache.put(*self._rows_of(recs))
            if offset is None:
                return cache

    def _engine_rows(
        self, ids: Sequence[PointId]
    ) -> tuple[list[PointId], np.ndarray, np.ndarray | None]:
        """The engine's stored rows (recall and, if any, kernel) of ``ids``, as the cache holds
        them; ids the shard does not hold are left out."""
        lay = self._load_layout()
        with self._engine("retrieve"):
            recs = self._shard.retrieve(
                edge_ids(list(dict.fromkeys(ids))), with_payload=False,
                with_vector=lay.with_vector(lay.kernel_dim is not None),
            )  # fmt: skip
        return self._rows_of(recs)

    def _cache_read_back(self, ids: list[PointId]) -> None:
        """Rows of just-written ids as the engine stores them (never computed here); if that
        read fails the cache is dropped (rebuilt from the shard on the next recall)."""
        try:
            got = self._engine_rows(ids)
        except Exception:
            self._vcache = None
            raise
        cache = self._vcache
        if cache is not None:
            with self._vcache_lock:
                cache.put(*got)

    def _save_cache(self, cache: VectorCache | None, saved: str | None) -> str | None:
        """Save the vector cache for the next open (at a clean close); its token, or None.

        ``saved``: the token of files that still match (an unchanged copy mapped back from them,
        or a valid copy never used since the open): they stay as they are. A copy that cannot
        be written is not an error of the close: the next open rebuilds it.
        """
        if cache is None or not cache.changed:
            if saved is None:
                VectorCache.discard(self.shard_dir)
            return saved
        token = uuid.uuid4().hex
        try:
            cache.save(self.shard_dir, token, self._state.to_json())
        except OSError:
            VectorCache.discard(self.shard_dir)
            return None
        return token

    # --- reads: rows from the cache, from the engine where the cache lacks them ---

    def _hits(self, points: Any, kernel: bool, scored: bool = True, payloads: bool = True) -> Hits:
        """Engine points (scored or records) with vectors and payloads as one :class:`Hits`
        (``payloads`` False: empty ones, none were read)."""
        lay = self._load_layout()
        return Hits.build(normalize_ids([p.id for p in points]),
                          [p.score for p in points] if scored else [0.0] * len(points),
                          [lay.recall_of(p.vector) for p in points],
                          [p.payload or {} for p in points] if payloads else [{} for _ in points],
                          lay.dim,
                          [lay.kernel_of(p.vector, p.id) for p in points] if kernel else None,
                          lay.kernel_dim)  # fmt: skip

    def _cached_uuid_hits(
        self, uuids: list[Any], scores: np.ndarray, payloads: list[dict[str, Any]], kernel: bool
    ) -> Hits | None:
        """Hits of engine UUIDs straight from the vector cache (canonical ids included, nothing
        formatted); None when an id is not a UUID or not held (then the general path)."""
        cache = self._vcache
        if cache is None:
            return None
        try:
            keys = [u.int for u in uuids]
        except AttributeError:  # an int id among them: a collection of both kinds
            return None
        with self._vcache_lock:
            got = cache.take_uuids(keys)
        if got is None:
            return None
        ids, rows, krows = got
        return Hits(ids, scores, rows, payloads, krows if kernel else None)

    def _cached_hits(
        self,
        ids: list[PointId],
        scores: np.ndarray,
        payloads: list[dict[str, Any]],
        kernel: bool,
        with_payload: bool = True,
        keys: np.ndarray | None = None,
    ) -> Hits:
        """Hits with rows from the vector cache; from the engine if a write moved ids meanwhile.
        ``keys``: the ids as int keys, when the caller has them (:meth:`VectorCache.take`)."""
        cache = self._vcache
        got = None
        if cache is not None:
            with self._vcache_lock:
                got = cache.take(ids, keys)
        if got is not None:
            return Hits(ids, scores, got[0], payloads, got[1] if kernel else None)
        rows = self._engine_fetch(ids, kernel, with_payload)  # ids deleted meanwhile: left out
        where = {pid: r for r, pid in enumerate(ids)}
        keep = [where[pid] for pid in rows.ids]
        return Hits(rows.ids, scores[keep], rows.vectors, rows.payloads, rows.kernel_vectors)

    def _fetch(self, ids: list[PointId], with_kernel: bool, with_payload: bool = True) -> Hits:
        if self._cache() is None:
            return self._engine_fetch(ids, with_kernel, with_payload)
        shard = self._require()
        with self._engine("retrieve"):
            recs = shard.retrieve(edge_ids(ids), with_payload=with_payload, with_vector=False)
        by_id = records_by_id(recs)
        held = [i for i in ids if i in by_id]
        zeros = np.zeros(len(held), np.float32)
        pls = [by_id[i].payload or {} for i in held]
        return self._cached_hits(held, zeros, pls, with_kernel, with_payload)

    def _engine_fetch(
        self, ids: list[PointId], with_kernel: bool, with_payload: bool = True
    ) -> Hits:
        shard = self._require()
        lay = self._load_layout()
        with self._engine("retrieve"):
            recs = shard.retrieve(
                edge_ids(ids), with_payload=with_payload,
                with_vector=lay.with_vector(with_kernel),
            )  # fmt: skip
        by_id = records_by_id(recs)
        return self._hits([by_id[i] for i in ids if i in by_id], with_kernel, scored=False)
