"""QdrantStore: a Qdrant server or cluster by URL, or qdrant-client's local mode.

The same code serves ``:memory:``, a local folder and a sharded, replicated cluster: collection
parameters pass straight through to ``create_collection``, and recall asks only for the
vector fields SIFT needs (the recall vector, and the kernel when asked; see :mod:`._layout`).
What qdrant-client raises becomes one of :mod:`qdrant_sift.errors` in :mod:`._qdrant_errors`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from qdrant_sift.errors import ConfigError, StoreError, StoreLockedError

from ._base import VectorStore
from ._ef import query_ef
from ._filters import native_filter, to_qdrant
from ._hits import Hits, PointId
from ._layout import KERNEL_ID_KEY, KERNEL_VECTOR, Layout, read_layout
from ._names import validate_collection_name
from ._points import StoredPoint, normalize_id, normalize_ids, records_by_id
from ._qdrant_errors import QdrantErrorsBase

__all__ = ["QdrantStore"]


def _point_ids(ids: list[PointId]) -> list[int | str | uuid.UUID]:
    """The ids as the client's models type them (a list of the wider union)."""
    return list(ids)


_DIST = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}


class QdrantStore(QdrantErrorsBase, VectorStore):
    """A collection in Qdrant, reached through qdrant-client.

    Where the client comes from, first match wins: ``client`` (not closed by us), ``path``
    (local mode on disk), ``location`` (``":memory:"`` or a URL), ``url``, then the
    ``QDRANT_URL`` / ``QDRANT_API_KEY`` environment variables.
    """

    def __init__(
        self,
        collection: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: str | os.PathLike[str] | None = None,
        location: str | None = None,
        prefer_grpc: bool = False,
        client: Any = None,
        vector_name: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        validate_collection_name(collection)
        self.collection = collection
        self.vector_name = vector_name
        self._owns_client = client is None
        self._layout: Layout | None = None
        self._where = "a caller-provided client"
        self._local = False
        if client is not None:
            self._client = client
            self._local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
            return
        from qdrant_client import QdrantClient

        kwargs: dict[str, Any] = {}
        if path is not None:
            self._where = f"local folder {os.fspath(path)}"
            kwargs["path"] = os.fspath(path)
            self._local = True
        elif location == ":memory:":
            self._where = "memory"
            kwargs["location"] = ":memory:"
            self._local = True
        else:
            url = location or url or os.environ.get("QDRANT_URL")
            if not url:
                raise ConfigError(
                    "QdrantStore needs url=, path=, location=':memory:' or QDRANT_URL in the "
                    "environment"
                )
            self._where = url
            api_key = api_key if api_key is not None else os.environ.get("QDRANT_API_KEY")
            kwargs.update(
                url=url,
                api_key=api_key or None,
                prefer_grpc=prefer_grpc,
                timeout=None if timeout is None else int(timeout),
                check_compatibility=False,
            )
        try:
            self._client = QdrantClient(**kwargs)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise StoreLockedError(
                    f"{self._where} is open in another process; close it there or use a Qdrant "
                    "server for concurrent access"
                ) from exc
            raise StoreError(f"cannot open Qdrant at {self._where}: {exc}") from exc

    # --- metadata ----------------------------------------------------------------------------

    def exists(self) -> bool:
        with self._errors():
            return bool(self._client.collection_exists(self.collection))

    def _load_layout(self) -> Layout:
        if self._layout is None:
            with self._errors():
                info = self._client.get_collection(self.collection)
            vectors = info.config.params.vectors
            named = vectors if isinstance(vectors, dict) else {"": vectors}
            self._layout = read_layout(
                self.collection,
                {
                    name: (p.size, str(getattr(p.distance, "value", p.distance)))
                    for name, p in named.items()
                },
                self.vector_name or None,
                (getattr(info.config, "metadata", None) or {}).get(KERNEL_ID_KEY),
            )
        return self._layout

    # --- primitives --------------------------------------------------------------------------

    def _create(
        self,
        dim: int,
        distance: str,
        params: dict[str, Any],
        kernel_dim: int | None,
        kernel_id: str | None = None,
    ) -> None:
        from qdrant_client import models

        vp = models.VectorParams(size=dim, distance=models.Distance(_DIST[distance]))
        name = Layout.recall_name(self.vector_name or None, kernel_dim)
        cfg: Any = {name: vp} if name else vp
        if kernel_dim:
            cfg[KERNEL_VECTOR] = models.VectorParams(
                size=kernel_dim, distance=models.Distance.COSINE
            )
            if kernel_id is not None:  # collection metadata (Qdrant ≥ 1.16, and local mode)
                params = {
                    **params,
                    "metadata": {**params.get("metadata", {}), KERNEL_ID_KEY: kernel_id},
                }
        with self._errors():
            try:
                self._client.create_collection(self.collection, vectors_config=cfg, **params)
            except (TypeError, AssertionError) as exc:  # qdrant-client asserts on unknown kwargs
                raise ConfigError(f"unknown collection parameter: {exc}") from exc
        self._layout = None

    def _upsert(
        self,
        ids: list[PointId],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        kernel_vectors: np.ndarray | None,
    ) -> None:
        from qdrant_client import models

        lay = self._load_layout()
        vecs: Any = vectors.tolist()
        if lay.using is not None or kernel_vectors is not None:
            vecs = {lay.using or "": vecs}
            if kernel_vectors is not None:
                vecs[KERNEL_VECTOR] = kernel_vectors.tolist()
        with self._errors():
            self._client.upsert(
                self.collection,
                points=models.Batch(ids=_point_ids(ids), vectors=vecs, payloads=payloads),
                wait=True,
            )

    def _native_filter(self, filter: Any) -> Any:
        from qdrant_client import models

        return native_filter(
            filter, to_qdrant, models.Filter, "QdrantStore", "qdrant_client.models.Filter"
        )

    def _with_vectors(self, wanted: bool, kernel: bool = False) -> Any:
        """Only the vector fields SIFT needs, never every named vector of the point."""
        return self._load_layout().with_vector(kernel) if wanted else False

    def _vec(self, v: Any) -> np.ndarray:
        return np.asarray(self._load_layout().recall_of(v), dtype=np.float32)

    def _search(
        self,
        queries: list[np.ndarray],
        k: int,
        filter: Any,
        params: dict[str, Any],
        with_kernel: bool,
        vectors: Sequence[bool] | None = None,
        limits: Sequence[int] | None = None,
        with_payload: bool = True,
    ) -> list[Hits]:
        from qdrant_client import models

        exact = bool(params.get("exact", False))
        flt = self._native_filter(filter)
        lay = self._load_layout()
        with_vec = self._with_vectors(True, with_kernel)
        rows = [True] * len(queries) if vectors is None else list(vectors)
        tops = [k] * len(queries) if limits is None else list(limits)
        reqs = [
            models.QueryRequest(
                query=q.tolist(),
                using=lay.using,
                limit=top,
                filter=flt,
                # local mode is exact (it warns about search params)
                params=None
                if self._local
                else models.SearchParams(
                    hnsw_ef=params.get("hnsw_ef") or query_ef(top, full, k), exact=exact
                ),
                with_vector=with_vec if full else False,
                with_payload=full and with_payload,
            )
            for q, full, top in zip(queries, rows, tops, strict=True)
        ]
        with self._errors():
            res = self._client.query_batch_points(self.collection, requests=reqs)
        return [
            self._hits(r.points, with_kernel, scored=True) if full
            else Hits(normalize_ids([p.id for p in r.points]),
                      np.asarray([p.score for p in r.points], np.float32), None, [])
            for r, full in zip(res, rows, strict=True)
        ]  # fmt: skip

    def _hits(self, points: Any, kernel: bool, scored: bool) -> Hits:
        """Client points (scored or records) with vectors and payloads as one :class:`Hits`."""
        lay = self._load_layout()
        return Hits.build(
            normalize_ids([p.id for p in points]),
            [p.score for p in points] if scored else [0.0] * len(points),
            [lay.recall_of(p.vector) for p in points],
            [p.payload or {} for p in points],
            lay.dim,
            [lay.kernel_of(p.vector, p.id) for p in points] if kernel else None,
            lay.kernel_dim,
        )

    def _fetch(self, ids: list[PointId], with_kernel: bool, with_payload: bool = True) -> Hits:
        with self._errors():
            recs = self._client.retrieve(
                self.collection, ids=ids, with_payload=with_payload,
                with_vectors=self._with_vectors(True, with_kernel),
            )  # fmt: skip
        by_id = records_by_id(recs)
        return self._hits([by_id[i] for i in ids if i in by_id], with_kernel, scored=False)

    def retrieve(self, ids: Sequence[PointId], with_vectors: bool = True) -> list[StoredPoint]:
        norm = normalize_ids(ids)
        if not norm:
            return []
        with_vec = self._with_vectors(with_vectors)
        with self._errors():
            recs = self._client.retrieve(
                self.collection, ids=norm, with_payload=True, with_vectors=with_vec
            )
        by_id = records_by_id(recs)
        return [
            StoredPoint(
                i,
                self._vec(by_id[i].vector) if with_vectors else None,
                by_id[i].payload or {},
            )
            for i in dict.fromkeys(norm)
            if i in by_id
        ]

    def delete(self, ids: Sequence[PointId]) -> None:
        from qdrant_client import models

        norm = normalize_ids(ids)
        if norm:
            with self._errors():
                self._client.delete(
                    self.collection,
                    points_selector=models.PointIdsList(points=_point_ids(norm)),
                    wait=True,
                )

    def count(self) -> int:
        with self._errors():
            return int(self._client.count(self.collection, exact=True).count)

    def scroll(
        self,
        batch_size: int = 1000,
        with_vectors: bool = False,
        filter: Any = None,
        payload_keys: Sequence[str] | None = None,
    ) -> Iterator[StoredPoint]:
        offset: Any = None
        with_vec = self._with_vectors(with_vectors)
        flt = self._native_filter(filter)
        while True:
            with self._errors():
                recs, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=batch_size,
                    offset=offset,
                    with_payload=True if payload_keys is None else list(payload_keys),
                    with_vectors=with_vec,
                )
            for r in recs:
                vec = self._vec(r.vector) if with_vectors else None
                yield StoredPoint(normalize_id(r.id), vec, r.payload or {})
            if offset is None:
                return

    def index_payload(self, fields: Sequence[str]) -> None:
        if self._local:  # local mode has no payload indexes (it warns); it filters by scanning
            return
        from qdrant_client import models

        with self._errors():
            have = set(self._client.get_collection(self.collection).payload_schema or {})
            for name in fields:
                if name not in have:
                    self._client.create_payload_index(
                        self.collection, name, field_schema=models.PayloadSchemaType.KEYWORD,
                        wait=True,
                    )  # fmt: skip

    def drop(self) -> None:
        with self._errors():
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)
        self._layout = None

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._owns_client = False
