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

This module holds the store's creation, writes and life cycle; its reads (a recall's queries,
``retrieve``, ``scroll``) are :mod:`._edge_read`, the vector cache's upkeep and the rows read
through it :mod:`._edge_vcache`, the shard's lock, opening and manifest :mod:`._edge_shard`
(the bases of :class:`EdgeStore`, in that order).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    ConfigError,
    StoreCorruptedError,
    StoreError,
)

from ._base import VectorStore
from ._edge_read import EdgeReadBase
from ._edge_shard import MAX_SOURCES, edge_id, edge_ids
from ._hits import PointId
from ._integrity import (
    IdState,
    ShardManifest,
    fingerprint,
)
from ._layout import KERNEL_VECTOR, RECALL_VECTOR, Layout
from ._names import shard_path, validate_collection_name
from ._points import normalize_ids
from ._vcache import VectorCache

__all__ = ["EdgeStore"]

_DIST = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}
#: Cluster-only parameters: accepted (so one code path serves a cluster) and ignored here.
_CLUSTER_ONLY = frozenset(
    {"shard_number", "replication_factor", "write_consistency_factor", "sharding_method",
     "init_from", "timeout"}
)  # fmt: skip


class EdgeStore(EdgeReadBase, VectorStore):
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

    def delete(self, ids: Sequence[PointId]) -> None:
        import qdrant_edge as qe

        self._require()
        norm = list(dict.fromkeys(normalize_ids(ids)))
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
