"""The one interface every vector store implements.

SIFT needs the K nearest candidates *with their vectors*; ``recall`` returns exactly that as a
:class:`~._points.Candidates` (the values stores hand out and take in live in
:mod:`._points`). Backends differ only in how they talk to Qdrant, so validation, the
both-directions merge (:mod:`._hits`) and the empty-result policy live here once.

A collection may also hold SIFT's kernel as a second named vector (``create(kernel_dim=…)``,
``upsert(kernel_vectors=…)``, ``recall(with_kernel=True)``), so recall and kernel can come from
different embeddings; :mod:`._layout` describes how the vectors are named.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    EmptyCollectionError,
    InvalidInputError,
    StoreError,
)

from ._hits import (
    OPPOSITE_PROBE,
    Hits,
    PointId,
    merge_directions,
    opposite_probe_settles,
)
from ._layout import (
    Layout,
    check_kernel_dim,
    check_kernel_id,
    check_kernel_vectors,
    no_kernel_error,
    unit_rows,
    valid_kernel_dim,
)
from ._points import Candidates, StoredPoint, as_matrix, normalize_ids, prepare_query

__all__ = ["DISTANCES", "Hits", "PointId", "VectorStore"]

#: Distances a collection may be created with; SIFT's kernel is an inner product, so
#: ``both_directions`` needs "cosine" or "dot".
DISTANCES: tuple[str, ...] = ("cosine", "dot", "euclid", "manhattan")


#: The search parameters ``recall`` passes to a store (checked there, once for every store).
SEARCH_PARAMS = frozenset({"hnsw_ef", "exact"})


class VectorStore(ABC):
    """A Qdrant collection seen through the few operations recall, ingest and SIFT need."""

    collection: str

    # --- backend primitives -------------------------------------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """Whether the collection has been created."""

    @abstractmethod
    def _load_layout(self) -> Layout:
        """The collection's named vectors (:class:`~._layout.Layout`), read once;
        CollectionNotFoundError when the collection does not exist."""

    @property
    def dim(self) -> int:
        """Vector dimension; CollectionNotFoundError when the collection does not exist."""
        return self._load_layout().dim

    @property
    def distance(self) -> str:
        """One of :data:`DISTANCES`."""
        return self._load_layout().distance

    @property
    def kernel_dim(self) -> int | None:
        """Dimension of the stored kernel vectors (``sift-kernel``); None when absent."""
        return self._load_layout().kernel_dim

    @property
    def kernel_id(self) -> str | None:
        """What made the stored kernel vectors (``create(kernel_id=…)``); None when the
        collection has none or did not record it."""
        return self._load_layout().kernel_id

    @abstractmethod
    def _create(
        self,
        dim: int,
        distance: str,
        params: dict[str, Any],
        kernel_dim: int | None,
        kernel_id: str | None = None,
    ) -> None: ...

    @abstractmethod
    def _upsert(
        self,
        ids: list[PointId],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        kernel_vectors: np.ndarray | None,
    ) -> None: ...

    @abstractmethod
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
        """One :class:`Hits` per query, best first (with ``kernel_vectors`` if asked).

        ``vectors[i]`` False: ids and scores only for query i (``Hits.vectors`` None); None
        means vectors and payloads for every query. ``limits[i]``: top-``limits[i]`` for
        query i instead of top-``k`` (its default ``hnsw_ef`` follows its own limit).
        ``with_payload`` False: no payloads are read (empty dicts stand in for them)."""

    def _fetch(self, ids: list[PointId], with_kernel: bool, with_payload: bool = True) -> Hits:
        """Rows of ``ids`` (vectors, payloads, kernels when asked) in that order, scores 0;
        ids not stored are left out. Backends override this with one read; this fallback reads
        recall vectors only (:class:`ConfigError` for kernels: recall one direction instead)."""
        if with_kernel:
            raise ConfigError(
                f"{type(self).__name__} cannot fetch kernel vectors for the −q hits of a "
                "both-directions recall; pass both_directions=False with with_kernel=True, or "
                "override _fetch"
            )
        pts = self.retrieve(ids, with_vectors=True)
        vecs = [p.vector for p in pts]
        return Hits.build([p.id for p in pts], [0.0] * len(pts), vecs,
                          [p.payload for p in pts], self.dim)  # fmt: skip

    @abstractmethod
    def retrieve(self, ids: Sequence[PointId], with_vectors: bool = True) -> list[StoredPoint]:
        """Stored points for ``ids`` in the given order; unknown ids are left out."""

    @abstractmethod
    def delete(self, ids: Sequence[PointId]) -> None:
        """Delete points by id (unknown ids are ignored)."""

    @abstractmethod
    def count(self) -> int:
        """Exact number of points."""

    @abstractmethod
    def scroll(
        self,
        batch_size: int = 1000,
        with_vectors: bool = False,
        filter: Any = None,
        payload_keys: Sequence[str] | None = None,
    ) -> Iterator[StoredPoint]:
        """Every stored point (matching ``filter``, as in :meth:`recall`), in id order; with
        ``payload_keys``, only those payload fields (ingest's sync scan skips the texts)."""

    @abstractmethod
    def close(self) -> None:
        """Release the client / shard (and its lock)."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the whole collection (its points and configuration); no-op if missing."""

    def optimize(self) -> bool:
        """Build indexes now where the backend needs an explicit call; True if anything ran."""
        return False

    def index_payload(self, fields: Sequence[str]) -> None:
        """Index these payload fields as keywords, where the backend indexes payloads (a Qdrant
        server, Qdrant Edge; local mode filters by scanning). Existing indexes are kept."""
        return None

    def note_sources(self, paths: Sequence[str]) -> None:
        """Remember the absolute paths a collection was ingested from, so a damaged Edge shard
        can name its repair (``qdrant-sift ingest PATHS --recreate``); no-op elsewhere."""
        return None

    # --- shared logic -------------------------------------------------------------------------

    def create(
        self,
        dim: int,
        *,
        distance: str = "cosine",
        exist_ok: bool = False,
        kernel_dim: int | None = None,
        kernel_id: str | None = None,
        **collection_params: Any,
    ) -> bool:
        """Create the collection; True if created, False if it already existed (``exist_ok``).

        ``kernel_dim``: also hold a cosine kernel vector of that size per point (named
        ``sift-kernel``; the recall vector is then named too, see :mod:`._layout`);
        ``kernel_id``: what makes those vectors (an embedder's ``kernel_id``), recorded with
        the collection so that vectors of another kernel are refused later.
        An existing collection of another dimension or kernel is an error even with
        ``exist_ok`` (:class:`DimensionMismatchError`, or :class:`ConfigError` when one has a
        kernel and the other not, or another recorded kernel id), so ingest never writes
        vectors of the wrong kind.
        """
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim <= 0:
            raise InvalidInputError(f"dim must be a positive int, got {dim!r}")
        kernel_dim = valid_kernel_dim(kernel_dim)
        if kernel_id is not None and (not isinstance(kernel_id, str) or not kernel_id):
            raise InvalidInputError(f"kernel_id must be a non-empty str or None, got {kernel_id!r}")
        if kernel_id is not None and kernel_dim is None:
            raise ConfigError("kernel_id names what makes the kernel vectors: pass kernel_dim too")
        if distance not in DISTANCES:
            raise ConfigError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if self.exists():
            if self.dim != dim:
                raise DimensionMismatchError(
                    f"collection {self.collection!r} holds {self.dim}-d vectors, asked for {dim}-d"
                )
            check_kernel_dim(self.collection, self.kernel_dim, kernel_dim)
            check_kernel_id(self.collection, self.kernel_id, kernel_id)
            if not exist_ok:
                raise StoreError(f"collection {self.collection!r} already exists")
            return False
        self._create(int(dim), distance, dict(collection_params), kernel_dim, kernel_id)
        return True

    def upsert(
        self,
        ids: Sequence[PointId],
        vectors: Any,
        payloads: Sequence[Mapping[str, Any]] | None = None,
        *,
        kernel_vectors: Any = None,
    ) -> None:
        """Insert or replace points; everything is validated before anything is written.

        ``kernel_vectors`` (n, kernel_dim): required by, and only accepted by, a collection
        created with ``kernel_dim``.
        """
        vecs = as_matrix(vectors)
        norm_ids = normalize_ids(ids)
        if len(norm_ids) != vecs.shape[0]:
            raise InvalidInputError(f"{len(norm_ids)} ids for {vecs.shape[0]} vectors")
        pls = [dict(p) for p in payloads] if payloads is not None else [{} for _ in norm_ids]
        if len(pls) != len(norm_ids):
            raise InvalidInputError(f"{len(pls)} payloads for {len(norm_ids)} ids")
        if vecs.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"vectors have dimension {vecs.shape[1]}, collection {self.collection!r} has "
                f"{self.dim}"
            )
        if self.distance == "cosine" and not np.all(np.linalg.norm(vecs, axis=1) > 0):
            raise InvalidInputError("a zero vector cannot be stored in a cosine collection")
        kvecs = check_kernel_vectors(
            self.collection, self.kernel_dim, kernel_vectors, len(norm_ids)
        )
        if norm_ids:
            self._upsert(norm_ids, vecs, pls, kvecs)

    def recall(
        self,
        query: Any,
        k: int,
        *,
        both_directions: bool = True,
        filter: Any = None,
        with_kernel: bool = False,
        with_payload: bool = True,
        **search_params: Any,
    ) -> Candidates:
        """The K nearest points with vectors and payloads (see :class:`Candidates`).

        ``with_kernel``: also their kernel vectors, row for row (a :class:`ConfigError` on a
        collection without them). Recall itself always uses the recall vector.
        ``with_payload`` False: no payloads are read (``payloads`` is empty); SIFT needs only
        the vectors, so read the payloads of its picks alone afterwards with
        ``retrieve(ids, with_vectors=False)`` (N of them instead of K).

        Empty result: :class:`EmptyCollectionError` if the collection holds no points at all,
        empty :class:`Candidates` if only the filter excluded everything. A collection that was
        never created raises ``CollectionNotFoundError``.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        dim = self.dim
        q = prepare_query(query, dim)
        if both_directions and self.distance not in ("cosine", "dot"):
            raise ConfigError(
                f"both_directions needs an inner-product distance, collection uses "
                f"{self.distance!r}; pass both_directions=False"
            )
        if with_kernel and self.kernel_dim is None:
            raise no_kernel_error(self.collection)
        unknown = set(search_params) - SEARCH_PARAMS
        if unknown:
            raise ConfigError(f"unknown search parameters {sorted(unknown)} (use hnsw_ef, exact)")
        kern = bool(with_kernel)
        pay = bool(with_payload)
        k = int(k)
        if both_directions:
            # −q: ids and scores only, rows only for the ids the merge keeps; first a probe of
            # its best OPPOSITE_PROBE hits in the same batch, the full top-k only if the probe
            # cannot rule out more of them (see opposite_probe_settles)
            probe = min(OPPOSITE_PROBE, k)
            pos, neg = self._search(
                [q, -q], k, filter, search_params, kern, [True, False], [k, probe], pay
            )
            if probe < k and not opposite_probe_settles(pos, neg, k, probe):
                neg = self._search([-q], k, filter, search_params, kern, [False])[0]
            hits = merge_directions(pos, neg, k, lambda ids: self._fetch(ids, kern, pay))
        else:
            hits = self._search([q], k, filter, search_params, kern, [True], None, pay)[0]
        assert hits.vectors is not None
        if not hits.ids and self.count() == 0:
            raise EmptyCollectionError(
                f"collection {self.collection!r} holds no points; ingest documents first"
            )
        return Candidates(
            ids=hits.ids,
            scores=hits.scores.astype(np.float32, copy=False),
            vectors=np.ascontiguousarray(hits.vectors, dtype=np.float32),
            payloads=hits.payloads if pay else [],
            kernel_vectors=unit_rows(hits.kernel_vectors) if with_kernel else None,
        )

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(collection={self.collection!r})"
