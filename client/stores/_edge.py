"""EdgeStore: Qdrant Edge, the real Qdrant engine embedded in this process, in a folder.

Search is exact brute force until :meth:`EdgeStore.optimize` builds HNSW (an explicit, blocking
call); after that recall uses ``hnsw_ef = max(HNSW_EF_FACTOR·k, HNSW_EF_MIN)`` (Qdrant's own
rule) unless told otherwise (a both-directions recall first probes −q's best 16 at
``hnsw_ef = 16`` in the same batch, and searches −q's top k at ``max(k, 64)``,
``OPPOSITE_EF_FACTOR``, only when the probe cannot rule out more −q hits; see
``opposite_probe_settles``).
One process owns a folder at a time: a second one gets :class:`StoreLockedError`.

Every shard carries a manifest (point count, id-set digest, file fingerprints at a clean close;
see :mod:`._integrity` for what that does and does not protect). A shard that does not match it
raises :class:`StoreCorruptedError` on every use except :meth:`EdgeStore.drop`, which is the
repair (then re-ingest). Every engine exception reaches the caller as a ``StoreError``.

This module holds the store's reads and writes; the shard's lock, opening and manifest are
:mod:`._edge_shard`, the vector cache's upkeep and the reads through it :mod:`._edge_vcache`
(bases of :class:`EdgeStore`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    ConfigError,
    StoreCorruptedError,
    StoreError,
)

from ._base import VectorStore
from ._edge_shard import MAX_SOURCES, edge_id, edge_ids
from ._edge_vcache import EdgeCacheBase
from ._ef import query_ef
from ._filters import native_filter, to_edge
from ._hits import OPPOSITE_PROBE_EF, Hits, PointId
from ._integrity import (
    IdState,
    ShardManifest,
    fingerprint,
)
from ._layout import KERNEL_VECTOR, RECALL_VECTOR, Layout
from ._names import shard_path, validate_collection_name
from ._points import StoredPoint, normalize_id, normalize_ids
from ._vcache import VectorCache, int_keys

__all__ = ["EdgeStore"]

_DIST = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}
#: Cluster-only parameters: accepted (so one code path serves a cluster) and ignored here.
_CLUSTER_ONLY = frozenset(
    {"shard_number", "replication_factor", "write_consistency_factor", "sharding_method",
     "init_from", "timeout"}
)  # fmt: skip


class EdgeStore(EdgeCacheBase, VectorStore):
    """A collection as an Edge shard in ``path/collection`` (created on :meth:`create`).

    ``probe``: load a shard that was not closed cleanly (or has no manifest) in a subprocess
    first, so an engine abort on damaged files kills the probe, not this process (about 0.2 s,
    only after a crash). ``None`` reads ``QDRANT_SIFT_EDGE_PROBE`` (default on; ``0`` = off).

    ``vector_cache``: keep a float32 copy of every stored vector (n × d × 4 bytes, built on the
    first recall, kept in step with every write, saved beside the shard at a clean close and
    mapped back on the next open; see :mod:`._vcache`), so recall reads ids, scores and payloads
    from the engine and gathers vectors with one numpy take instead of converting Python float
    lists (the binding's only way to hand vectors out: ~20 µs a 384-d vector, four times the
    HNSW search of K = 200 at 100k points). ``None`` reads ``QDRANT_SIFT_EDGE_VECTOR_CACHE``
    (default on; ``0`` = off, for a collection whose vectors should not be held twice).
    """

    #: ``hnsw_ef`` of a both-directions recall's −q probe (see ``OPPOSITE_PROBE_EF``)
    opposite_probe_ef = OPPOSITE_PROBE_EF

    def __init__(
        self,
        path: str | os.PathLike[str],
        collection: str = "docs",
        *,
        probe: bool | None = None,
        vector_cache: bool | None = None,
    ) -> None:
        validate_collection_name(collection)
        shard_path(path, collection)  # refuse before creating anything
        self.collection = collection
        self.root = Path(path).expanduser().resolve()
        self._shard: Any = None
        self._layout: Layout | None = None
        self._lock_fd: int | None = None
        self._damage: StoreCorruptedError | None = None
        self._state = IdState()
        self._sources: list[str] = []
        self._kernel_id: str | None = None
        self._write_lock = threading.RLock()
        if probe is None:
            probe = os.environ.get("QDRANT_SIFT_EDGE_PROBE", "1").strip().lower() not in (
                "0", "false", "no", "off"
            )  # fmt: skip
        self._probe = probe
        if vector_cache is None:
            env = os.environ.get("QDRANT_SIFT_EDGE_VECTOR_CACHE", "1").strip().lower()
            vector_cache = env not in ("0", "false", "no", "off")
        self._vcache_on = bool(vector_cache)
        self._vcache: VectorCache | None = None
        self._vcache_saved: str | None = None  # token of saved files that match the shard
        self._vcache_token: str | None = None  # token of the files the live copy was mapped from
        self._vcache_lock = threading.Lock()  # short: puts, drops and takes of in-memory rows
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_dir = shard_path(self.root, collection)
        self._lock()
        try:
            if (self.shard_dir / "edge_config.json").exists():
                self._open()
            elif (self.shard_dir / ShardManifest.name()).exists():
                self._damaged("edge_config.json is missing")
        except BaseException:
            self._unlock()
            raise

    # --- metadata ----------------------------------------------------------------------------

    def exists(self) -> bool:
        if self._damage is not None:
            raise self._damage
        return self._shard is not None

    @property
    def indexed(self) -> bool:
        """Whether an HNSW index exists (after :meth:`optimize` on enough data)."""
        shard = self._require()
        with self._engine("info"):
            return bool(shard.info().indexed_vectors_count)

    # --- primitives --------------------------------------------------------------------------

    def _create(
        self,
        dim: int,
        distance: str,
        params: dict[str, Any],
        kernel_dim: int | None,
        kernel_id: str | None = None,
    ) -> None:
        import qdrant_edge as qe

        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        params = {k: v for k, v in params.items() if k not in _CLUSTER_ONLY}
        vp: Any = qe.EdgeVectorParams(size=dim, distance=getattr(qe.Distance, _DIST[distance]))
        if kernel_dim:  # the layout of ._layout: both vectors named
            kp = qe.EdgeVectorParams(size=kernel_dim, distance=qe.Distance.Cosine)
            vp = {RECALL_VECTOR: vp, KERNEL_VECTOR: kp}
        try:
            cfg = qe.EdgeConfig(vectors=vp, **params)
        except TypeError as exc:
            raise ConfigError(f"unknown Edge collection parameter: {exc}") from exc
        with self._engine("create"):
            self._shard = qe.EdgeShard.create(str(self.shard_dir), cfg)
        self._layout = None
        self._vcache = None
        self._state, self._sources = IdState(), []
        self._kernel_id = kernel_id  # create() refuses one without kernel_dim
        self._write_manifest()

    def note_sources(self, paths: Sequence[str]) -> None:
        self._require()
        have = set(self._sources)
        new = [p for p in dict.fromkeys(paths) if p not in have]
        if new and len(self._sources) < MAX_SOURCES:
            with self._write_lock:
                self._sources.extend(new[: MAX_SOURCES - len(self._sources)])
                self._manifest_or_error()

    def _upsert(
        self,
        ids: list[PointId],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        kernels: Any,
    ) -> None:
        import qdrant_edge as qe

        self._require()
        rows = self._load_layout().point_vectors(vectors, kernels)
        points = [qe.Point(edge_id(i), v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        with self._write_lock:
            self._vcache_saved = None  # a saved copy no longer matches (a live one follows below)
            known = self._known(ids)
            after = self._state.add(i for i in dict.fromkeys(ids) if i not in known)
            sources = self._new_sources(payloads)
            self._sources.extend(sources)
            self._apply(qe.UpdateOperation.upsert_points(points), after, "upsert", sources)
            if self._vcache is not None:
                self._cache_read_back(ids)

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
        by_id = dict(zip(normalize_ids([r.id for r in recs]), recs, strict=True))
        return [
            StoredPoint(
                i,
                np.asarray(lay.recall_of(by_id[i].vector), np.float32) if lay else None,
                by_id[i].payload or {},
            )
            for i in norm
            if i in by_id
        ]

    def delete(self, ids: Sequence[PointId]) -> None:
        import qdrant_edge as qe

        self._require()
        norm = list(dict.fromkeys(normalize_id(i) for i in ids))
        if not norm:
            return
        with self._write_lock:
            self._vcache_saved = None
            known = self._known(norm)
            after = self._state.remove(i for i in norm if i in known)
            op = qe.UpdateOperation.delete_points(edge_ids(norm))
            self._apply(op, after, "delete", [])
            if self._vcache is not None:
                with self._vcache_lock:
                    self._vcache.drop(norm)

    def count(self) -> int:
        self._require()
        return self._count()

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

    def index_payload(self, fields: Sequence[str]) -> None:
        import qdrant_edge as qe

        self._require()
        with self._engine("info"):
            have = set(self._shard.info().payload_schema or {})
        for name in fields:
            if name not in have:
                op = qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword)
                with self._write_lock:
                    self._apply(op, self._state, "payload index", [])

    def optimize(self) -> bool:
        """Build HNSW now (blocking; about a minute per 100k×384 on two cores)."""
        shard = self._require()
        with self._engine("optimize"):
            ran = bool(shard.optimize())
            shard.flush()
        return ran

    def drop(self) -> None:
        """Delete the collection; also the repair for a damaged shard (then re-ingest)."""
        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        folder = shard_path(self.root, self.collection)  # re-checked: never outside the root
        if folder.exists():
            try:
                shutil.rmtree(folder)
            except OSError as exc:
                raise StoreError(f"cannot delete Edge shard {folder}: {exc}") from exc
        self._layout = None
        self._vcache = self._vcache_saved = self._vcache_token = None
        self._damage = None
        self._state, self._sources, self._kernel_id = IdState(), [], None

    def flush(self) -> None:
        """Make every acknowledged write durable in the segments (the WAL already has them)."""
        shard = self._require()
        with self._engine("flush"):
            shard.flush()

    def close(self) -> None:
        """Flush, close the shard, fingerprint it in the manifest, release the lock.

        A failed flush or close raises ``StoreError`` (after the lock is released); the
        manifest then stays marked unclean, so the next open verifies the shard in full.
        """
        error: BaseException | None = None
        with self._write_lock:
            cache, saved, mapped = self._vcache, self._vcache_saved, self._vcache_token
            if self._shard is not None:
                try:
                    with self._engine("flush"):
                        self._shard.flush()
                    if self._count() != self._state.points:  # bookkeeping drifted: recount
                        self._state = self._scan()
                except StoreError as exc:
                    error = exc
                try:
                    with self._engine("close"):
                        self._shard.close()
                except StoreError as exc:
                    error = error or exc
                self._shard = None
                self._vcache = self._vcache_saved = self._vcache_token = None
                if error is None:
                    try:
                        token = self._save_cache(cache, saved if cache is None else mapped)
                        self._write_manifest(
                            clean=True, files=fingerprint(self.shard_dir), vcache=token
                        )
                    except OSError as exc:
                        error = StoreError(f"cannot write the manifest of {self.shard_dir}: {exc}")
            self._unlock()
        if error is not None:
            raise StoreError(
                f"closing {self.shard_dir} failed: {error}; acknowledged writes are in the "
                "write-ahead log and are replayed (and verified) on the next open"
            ) from error

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
