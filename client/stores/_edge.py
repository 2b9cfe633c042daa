"""EdgeStore: Qdrant Edge, the real Qdrant engine embedded in this process, in a folder.

Search is exact brute force until :meth:`EdgeStore.optimize` builds HNSW (an explicit, blocking
call); after that recall uses ``hnsw_ef = max(HNSW_EF_FACTOR·k, 64)`` unless told otherwise.
One process owns a folder at a time: a second one gets :class:`StoreLockedError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    CollectionNotFoundError,
    ConfigError,
    InvalidInputError,
    StoreError,
    StoreLockedError,
)

from ._base import Hits, PointId, StoredPoint, VectorStore, normalize_id
from ._filters import Filter, Match, Range, as_filter, to_edge
from ._names import shard_path, validate_collection_name
from ._qdrant import HNSW_EF_FACTOR

__all__ = ["EdgeStore"]

_DIST = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}
#: Cluster-only parameters: accepted (so one code path serves a cluster) and ignored here.
_CLUSTER_ONLY = frozenset(
    {"shard_number", "replication_factor", "write_consistency_factor", "sharding_method",
     "init_from", "timeout"}
)  # fmt: skip


def _edge_id(pid: PointId) -> Any:
    return pid if isinstance(pid, int) else uuid.UUID(pid)


class EdgeStore(VectorStore):
    """A collection as an Edge shard in ``path/collection`` (created on :meth:`create`)."""

    def __init__(self, path: str | os.PathLike[str], collection: str = "docs") -> None:
        validate_collection_name(collection)
        shard_path(path, collection)  # refuse before creating anything
        self.collection = collection
        self.root = Path(path).expanduser().resolve()
        self._shard: Any = None
        self._shape: tuple[int, str] | None = None
        self._lock_fd: int | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_dir = shard_path(self.root, collection)
        self._lock()
        if (self.shard_dir / "edge_config.json").exists():
            self._open()

    # --- locking and opening -----------------------------------------------------------------

    def _lock(self) -> None:
        """An advisory lock beside the shard: Edge's own WAL lock gives an unhelpful message."""
        lock_path = self.root / f".{self.collection}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreLockedError(
                f"{self.shard_dir} is open in another process (or another EdgeStore here); "
                "close it there, or serve the collection from a Qdrant server for shared access"
            ) from exc
        self._lock_fd = fd

    def _open(self) -> None:
        import qdrant_edge as qe

        try:
            self._shard = qe.EdgeShard.load(str(self.shard_dir))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLockedError(f"{self.shard_dir} is open in another process") from exc
            raise StoreError(f"cannot open Edge shard {self.shard_dir}: {exc}") from exc

    def _require(self) -> Any:
        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        if self._shard is None:
            raise CollectionNotFoundError(
                f"no collection {self.collection!r} in {self.root}; create it or ingest first"
            )
        return self._shard

    # --- metadata ----------------------------------------------------------------------------

    def exists(self) -> bool:
        return self._shard is not None

    def _load_shape(self) -> tuple[int, str]:
        if self._shape is None:
            self._require()
            cfg = json.loads((self.shard_dir / "edge_config.json").read_text())
            vec = cfg["vectors"][""]
            self._shape = (int(vec["size"]), str(vec["distance"]).lower())
        return self._shape

    @property
    def dim(self) -> int:
        return self._load_shape()[0]

    @property
    def distance(self) -> str:
        return self._load_shape()[1]

    @property
    def indexed(self) -> bool:
        """Whether an HNSW index exists (after :meth:`optimize` on enough data)."""
        return bool(self._require().info().indexed_vectors_count)

    # --- primitives --------------------------------------------------------------------------

    def _create(self, dim: int, distance: str, params: dict[str, Any]) -> None:
        import qdrant_edge as qe

        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        params = {k: v for k, v in params.items() if k not in _CLUSTER_ONLY}
        vp = qe.EdgeVectorParams(size=dim, distance=getattr(qe.Distance, _DIST[distance]))
        try:
            cfg = qe.EdgeConfig(vectors=vp, **params)
        except TypeError as exc:
            raise ConfigError(f"unknown Edge collection parameter: {exc}") from exc
        try:
            self._shard = qe.EdgeShard.create(str(self.shard_dir), cfg)
        except Exception as exc:
            raise StoreError(f"cannot create Edge shard {self.shard_dir}: {exc}") from exc
        self._shape = None

    def _upsert(self, ids: list[PointId], vectors: np.ndarray, payloads: list[dict]) -> None:
        import qdrant_edge as qe

        shard = self._require()
        rows = vectors.tolist()
        points = [qe.Point(_edge_id(i), v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        try:
            shard.update(qe.UpdateOperation.upsert_points(points))
        except Exception as exc:
            raise StoreError(f"Edge upsert failed: {exc}") from exc

    def _native_filter(self, filter: Any) -> Any:
        if filter is None:
            return None
        if isinstance(filter, (Filter, Match, Range, dict)):
            return to_edge(as_filter(filter))
        import qdrant_edge as qe

        if isinstance(filter, qe.Filter):
            return filter
        raise InvalidInputError(
            f"EdgeStore takes our Filter, a dict or qdrant_edge.Filter, not {type(filter).__name__}"
        )

    def _search(
        self, queries: list[np.ndarray], k: int, filter: Any, params: dict[str, Any]
    ) -> list[Hits]:
        import qdrant_edge as qe

        shard = self._require()
        unknown = set(params) - {"hnsw_ef", "exact"}
        if unknown:
            raise ConfigError(f"unknown search parameters {sorted(unknown)} (use hnsw_ef, exact)")
        sp = qe.SearchParams(
            hnsw_ef=params.get("hnsw_ef") or max(HNSW_EF_FACTOR * k, 64),
            exact=bool(params.get("exact", False)),
        )
        flt = self._native_filter(filter)
        reqs = [
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(q.tolist()),
                filter=flt,
                params=sp,
                with_vector=True,
                with_payload=True,
            )
            for q in queries
        ]
        try:
            res = shard.query_batch(qe.QueryBatchRequest(reqs))
        except Exception as exc:
            raise StoreError(f"Edge query failed: {exc}") from exc
        dim = self.dim
        return [
            Hits.build([normalize_id(p.id) for p in r], [p.score for p in r],
                       [p.vector for p in r], [p.payload or {} for p in r], dim)
            for r in res
        ]  # fmt: skip

    def retrieve(self, ids: Sequence[PointId], with_vectors: bool = True) -> list[StoredPoint]:
        shard = self._require()
        norm = list(dict.fromkeys(normalize_id(i) for i in ids))
        if not norm:
            return []
        recs = shard.retrieve(
            [_edge_id(i) for i in norm], with_payload=True, with_vector=with_vectors
        )
        by_id = {normalize_id(r.id): r for r in recs}
        return [
            StoredPoint(
                i,
                np.asarray(by_id[i].vector, np.float32) if with_vectors else None,
                by_id[i].payload or {},
            )
            for i in norm
            if i in by_id
        ]

    def delete(self, ids: Sequence[PointId]) -> None:
        import qdrant_edge as qe

        shard = self._require()
        norm = [normalize_id(i) for i in ids]
        if norm:
            shard.update(qe.UpdateOperation.delete_points([_edge_id(i) for i in norm]))

    def count(self) -> int:
        import qdrant_edge as qe

        return int(self._require().count(qe.CountRequest(exact=True)))

    def scroll(self, batch_size: int = 1000, with_vectors: bool = False) -> Iterator[StoredPoint]:
        import qdrant_edge as qe

        shard = self._require()
        offset: Any = None
        while True:
            recs, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors
                )
            )
            for r in recs:
                vec = np.asarray(r.vector, np.float32) if with_vectors else None
                yield StoredPoint(normalize_id(r.id), vec, r.payload or {})
            if offset is None:
                return

    def optimize(self) -> bool:
        """Build HNSW now (blocking; about a minute per 100k×384 on two cores)."""
        shard = self._require()
        ran = bool(shard.optimize())
        shard.flush()
        return ran

    def drop(self) -> None:
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
        self._shape = None

    def flush(self) -> None:
        """Make every acknowledged write durable in the segments (the WAL already has them)."""
        self._require().flush()

    def close(self) -> None:
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.flush()
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
