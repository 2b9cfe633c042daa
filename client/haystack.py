"""Haystack adapter: the ``SiftRanker`` component picks ``top_k`` documents with SIFT.

Importing this module imports ``haystack`` (``pip install 'qdrant-sift[haystack]'``); importing
``qdrant_sift.client`` does not.

Wire it after a retriever that returns embeddings, e.g.
``QdrantEmbeddingRetriever(document_store, top_k=200, return_embedding=True)``, and feed the text
embedder's output to ``query_embedding``; documents without ``embedding`` (and the query, when
only ``query`` text is given) are embedded with ``embedder``.

Output: ``{"documents": [...]}`` in selection order, as copies whose ``score`` is the pick's
*gain* (share of the prompt's prior uncertainty it removed given the earlier picks) — not an
independent relevance, so keep the order — and whose ``meta`` gains ``sift_uncertainty`` (σ²ₙ
after the pick) and ``sift_rank``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

try:
    from haystack import Document, component
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "qdrant_sift.client.haystack needs haystack-ai: pip install 'qdrant-sift[haystack]'"
    ) from exc

from qdrant_sift.client._rerank import (
    as_vectors,
    check_count,
    fill_vectors,
    options_of,
    select_results,
)
from qdrant_sift.client.embed import embed_queries, embed_texts, resolve_embedder
from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import RERANK_DEFAULTS

__all__ = ["SiftDocumentEmbedder", "SiftRanker", "SiftTextEmbedder"]


@component
class SiftRanker:
    """Select ``top_k`` informative, non-redundant documents for a query (SIFT).

    Args:
        embedder: a qdrant_sift ``Embedder`` (``embed_documents``/``embed_query``) used only for
            what arrives without a vector; default the offline MiniLM, loaded on first need.
        top_k: how many documents to keep (``run(top_k=...)`` overrides).
        strategy: ``sift``, ``nearest``, ``mmr`` or ``random``.
        lam: SIFT's noise variance λ (small → diverse, large → nearest neighbours); not MMR's
            lambda. With ``strategy="mmr"``, ``diversity`` is 1 − MMR's lambda.
        alpha: adaptive stopping (fewer documents when the query is already well covered).
        unique: return each document at most once.
        reranker: anything with ``select(...)`` (``RemoteReranker`` for a GPU service).
    """

    def __init__(
        self,
        embedder: Any = None,
        top_k: int = 10,
        strategy: str = RERANK_DEFAULTS.strategy,
        lam: float = RERANK_DEFAULTS.lam,
        alpha: float | None = RERANK_DEFAULTS.alpha,
        unique: bool = RERANK_DEFAULTS.unique,
        diversity: float = RERANK_DEFAULTS.diversity,
        reranker: Any = None,
    ) -> None:
        self.embedder = embedder
        self.top_k = check_count(top_k, "top_k")
        self.strategy = strategy
        self.lam = lam
        self.alpha = alpha
        self.unique = unique
        self.diversity = diversity
        self.reranker = reranker
        self._embedder: Any = None

    def _get_embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = resolve_embedder(self.embedder)
        return self._embedder

    @component.output_types(documents=list[Document])
    def run(
        self,
        documents: list[Document],
        query_embedding: list[float] | None = None,
        query: str | None = None,
        top_k: int | None = None,
    ) -> dict[str, list[Document]]:
        """Return ``{"documents": picks}``; ``query_embedding`` wins over ``query`` text."""
        n = check_count(self.top_k if top_k is None else top_k, "top_k")
        if query_embedding is None and (query is None or not query.strip()):
            raise InvalidInputError("SiftRanker.run needs query_embedding or a non-empty query")
        if not documents or n == 0:
            return {"documents": []}
        if query_embedding is not None:
            target = as_vectors(query_embedding, "query_embedding")
        else:
            target = embed_queries(self._get_embedder(), [str(query)])
        texts = [d.content or "" for d in documents]
        candidates = fill_vectors(texts, [d.embedding for d in documents], self._get_embedder)
        results = select_results(target, candidates, n, options_of(self), reranker=self.reranker)
        picked = []
        for rank, r in enumerate(results):
            doc = documents[r.index]
            meta = {**doc.meta, "sift_uncertainty": r.uncertainty, "sift_rank": rank}
            picked.append(replace(doc, score=r.relevance_score, meta=meta))
        return {"documents": picked}


class _EmbedderComponent:
    def __init__(self, embedder: Any = None) -> None:
        self.embedder = embedder
        self._resolved: Any = None

    def warm_up(self) -> None:
        """Resolve the embedder (the default MiniLM loads its weights on first embed)."""
        if self._resolved is None:
            self._resolved = resolve_embedder(self.embedder)


@component
class SiftTextEmbedder(_EmbedderComponent):
    """Embeds the query text with a qdrant_sift ``Embedder`` (default: the offline MiniLM)."""

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, list[float]]:
        self.warm_up()
        return {"embedding": embed_queries(self._resolved, [text])[0].tolist()}


@component
class SiftDocumentEmbedder(_EmbedderComponent):
    """Sets ``Document.embedding`` with a qdrant_sift ``Embedder`` (copies; default MiniLM)."""

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        if not documents:
            return {"documents": []}
        self.warm_up()
        vectors = embed_texts(self._resolved, [d.content or "" for d in documents]).tolist()
        return {
            "documents": [replace(d, embedding=v) for d, v in zip(documents, vectors, strict=True)]
        }
