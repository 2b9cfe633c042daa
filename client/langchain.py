"""LangChain adapters: ``SiftRetriever`` (recall + SIFT over Qdrant) and ``SiftCompressor``.

Importing this module imports ``langchain_core`` (``pip install 'qdrant-sift[langchain]'``);
importing ``qdrant_sift.client`` does not.

Both return documents in SIFT's selection order with these metadata keys:

* ``relevance_score`` — the pick's *gain* (share of the prompt's prior uncertainty it removed
  given the earlier picks), the key LangChain's rerank compressors use; not an independent
  relevance, so keep the order and do not re-sort by it;
* ``sift_uncertainty`` — σ²ₙ, the prompt's posterior variance after this pick;
* ``sift_rank`` — 0-based selection position;
* ``sift_recall_score`` (retriever only) — Qdrant's cosine similarity at recall (negative when
  the point was recalled in the opposite direction; SIFT values anti-correlated points too).

Parameter names that differ from LangChain's habits: ``lam`` is SIFT's noise variance λ
(small → diverse, large → nearest neighbours), **not** MMR's ``lambda_mult``; with
``strategy="mmr"`` use ``diversity = 1 − lambda_mult``. ``fetch_k`` is the recall size K that
SIFT selects ``k`` from, as in LangChain's MMR search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "qdrant_sift.client.langchain needs langchain-core: pip install 'qdrant-sift[langchain]'"
    ) from exc

from qdrant_sift.client._rerank import (
    ADAPTER_OPTIONS,
    RerankResult,
    check_count,
    fill_vectors,
    options_of,
    select_results,
)
from qdrant_sift.client.embed import embed_queries, embed_texts, resolve_embedder
from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import RERANK_DEFAULTS
from qdrant_sift.reranker import relative_gains

__all__ = ["SiftCompressor", "SiftEmbeddings", "SiftRetriever"]


class SiftEmbeddings(Embeddings):
    """A qdrant_sift ``Embedder`` (default: the offline MiniLM) as LangChain ``Embeddings``, so
    langchain-qdrant can write a collection in the space ``SiftClient`` recalls from."""

    def __init__(self, embedder: Any = None) -> None:
        self.embedder = embedder
        self._resolved: Any = None

    def _get(self) -> Any:
        if self._resolved is None:
            self._resolved = resolve_embedder(self.embedder)
        return self._resolved

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return cast("list[list[float]]", embed_texts(self._get(), texts).tolist())

    def embed_query(self, text: str) -> list[float]:
        return cast("list[float]", embed_queries(self._get(), [text])[0].tolist())


class SiftRetriever(BaseRetriever):
    """Recall ``fetch_k`` candidates from Qdrant and return the ``k`` that SIFT picks.

    ``client`` is a :class:`~qdrant_sift.client.SiftClient`. For a collection written by
    langchain-qdrant's ``QdrantVectorStore`` use :meth:`from_vector_store`, which reads its
    ``page_content``/``metadata`` payload layout and its embeddings. Per call, ``invoke(query,
    k=..., fetch_k=..., filter=..., lam=...)`` overrides the fields of the same name.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Any
    k: int = 4
    fetch_k: int = 200
    strategy: str = RERANK_DEFAULTS.strategy
    lam: float = RERANK_DEFAULTS.lam
    alpha: float | None = RERANK_DEFAULTS.alpha
    unique: bool = RERANK_DEFAULTS.unique
    diversity: float = RERANK_DEFAULTS.diversity
    filter: Any = None
    metadata_key: str | None = "metadata"
    """Payload key whose dict becomes the document's metadata (langchain-qdrant's layout);
    the other payload keys are merged in beside it."""

    @classmethod
    def from_vector_store(cls, vector_store: Any, **kwargs: Any) -> SiftRetriever:
        """A retriever over the collection of a langchain-qdrant ``QdrantVectorStore``.

        Reuses its ``QdrantClient`` (local mode or server), collection, vector name, payload keys
        and ``Embeddings``, so the query is embedded in the same space as the stored points.
        """
        from qdrant_sift.client import SiftClient
        from qdrant_sift.client.stores import QdrantStore

        store = QdrantStore(
            vector_store.collection_name,
            client=vector_store.client,
            vector_name=vector_store.vector_name or None,
        )
        client = SiftClient(
            store=store,
            embedder=vector_store.embeddings,
            collection=vector_store.collection_name,
            text_key=vector_store.content_payload_key,
            kernel="recall",  # retrieval for a chain: no model is tuned, none to take a kernel from
        )
        kwargs.setdefault("metadata_key", vector_store.metadata_payload_key)
        return cls(client=client, **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        unknown = set(kwargs) - {"k", "fetch_k", "filter", *ADAPTER_OPTIONS}
        if unknown:
            raise InvalidInputError(f"unknown SiftRetriever options {sorted(unknown)}")
        k = check_count(kwargs.get("k", self.k), "k")
        fetch_k = check_count(kwargs.get("fetch_k", self.fetch_k), "fetch_k")
        if k == 0:
            return []
        picks = self.client.search(
            query,
            n=k,
            k=max(fetch_k, 1),
            strategy=kwargs.get("strategy", self.strategy),
            lam=kwargs.get("lam", self.lam),
            alpha=kwargs.get("alpha", self.alpha),
            unique=kwargs.get("unique", self.unique),
            diversity=kwargs.get("diversity", self.diversity),
            filter=kwargs.get("filter", self.filter),
        )
        # SiftClient's one-query cosine prior σ²₀ is k(q, q) = 1.
        gains = relative_gains(
            [p.uncertainty if p.uncertainty is not None else float("nan") for p in picks], 1.0
        )
        collection = getattr(self.client, "collection", None)
        documents = []
        for pick, gain in zip(picks, gains, strict=True):
            payload = dict(pick.metadata)
            nested = payload.pop(self.metadata_key, None) if self.metadata_key else None
            metadata = {**payload, **(nested if isinstance(nested, dict) else {})}
            if nested is not None and not isinstance(nested, dict):
                metadata[self.metadata_key] = nested
            metadata.update(
                relevance_score=gain,
                sift_uncertainty=pick.uncertainty,
                sift_rank=pick.rank,
                sift_recall_score=pick.score,
                _id=pick.id,
                _collection_name=collection,
            )
            documents.append(Document(page_content=pick.text, metadata=metadata, id=str(pick.id)))
        return documents


class SiftCompressor(BaseDocumentCompressor):
    """Pick ``k`` of the documents another retriever returned (``ContextualCompressionRetriever``).

    Vectors come, per document, from ``metadata[embedding_key]`` if present; else by
    ``metadata[id_key]`` from ``store`` (a ``VectorStore`` such as ``QdrantStore``, or a
    langchain-qdrant ``QdrantVectorStore``), which recovers the stored vectors that LangChain's
    ``Document`` drops; else by embedding ``page_content`` with ``embedder``. The query is always
    embedded with ``embedder`` (default: the offline MiniLM; pass the stack's ``Embeddings``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    embedder: Any = None
    k: int = 4
    strategy: str = RERANK_DEFAULTS.strategy
    lam: float = RERANK_DEFAULTS.lam
    alpha: float | None = RERANK_DEFAULTS.alpha
    unique: bool = RERANK_DEFAULTS.unique
    diversity: float = RERANK_DEFAULTS.diversity
    store: Any = None
    reranker: Any = None
    id_key: str = "_id"
    embedding_key: str = "embedding"

    @classmethod
    def from_vector_store(cls, vector_store: Any, **kwargs: Any) -> SiftCompressor:
        """A compressor that fetches vectors by id from a langchain-qdrant ``QdrantVectorStore``
        and embeds the query with its ``Embeddings``."""
        kwargs.setdefault("embedder", vector_store.embeddings)
        kwargs.setdefault("store", vector_store)
        return cls(**kwargs)

    def _stored_vectors(self, documents: Sequence[Document]) -> list[Any]:
        """Per document, its stored vector by ``metadata[id_key]`` or ``None``.

        Only ids that Qdrant could hold count, and only for documents whose
        ``_collection_name`` (set by langchain-qdrant) is absent or names this store's collection.
        """
        if self.store is None:
            return [None] * len(documents)
        store = self.store
        if not hasattr(store, "retrieve") and hasattr(store, "collection_name"):
            from qdrant_sift.client.stores import QdrantStore

            store = QdrantStore(
                store.collection_name, client=store.client, vector_name=store.vector_name or None
            )
        collection = getattr(store, "collection", None)
        ids: list[Any] = []
        for d in documents:
            same = d.metadata.get("_collection_name", collection) == collection
            pid = d.metadata.get(self.id_key)
            usable = same and pid is not None and d.metadata.get(self.embedding_key) is None
            ids.append(_norm_or_none(pid) if usable else None)
        wanted = [i for i in ids if i is not None]
        if not wanted:
            return [None] * len(documents)
        found = {p.id: p.vector for p in store.retrieve(wanted, with_vectors=True)}
        return [found.get(i) if i is not None else None for i in ids]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The picks in selection order, as copies with the SIFT metadata keys added."""
        k = check_count(self.k, "k")
        docs = list(documents)
        if not docs or k == 0:
            return []
        cache: list[Any] = []

        def get_embedder() -> Any:
            if not cache:
                cache.append(resolve_embedder(self.embedder))
            return cache[0]

        given = [d.metadata.get(self.embedding_key) for d in docs]
        stored = self._stored_vectors(docs)
        vectors = [g if g is not None else s for g, s in zip(given, stored, strict=True)]
        candidates = fill_vectors([d.page_content for d in docs], vectors, get_embedder)
        target = embed_queries(get_embedder(), [query])
        results = select_results(target, candidates, k, options_of(self), reranker=self.reranker)
        return [_annotated(docs[r.index], r, rank) for rank, r in enumerate(results)]


def _norm_or_none(pid: Any) -> Any:
    from qdrant_sift.client.stores._points import normalize_id

    try:
        return normalize_id(pid)
    except InvalidInputError:
        return None


def _annotated(doc: Document, result: RerankResult, rank: int) -> Document:
    metadata = {
        **doc.metadata,
        "relevance_score": result.relevance_score,
        "sift_uncertainty": result.uncertainty,
        "sift_rank": rank,
    }
    return Document(page_content=doc.page_content, metadata=metadata, id=doc.id)
