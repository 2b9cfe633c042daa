"""LlamaIndex adapter: ``SiftNodePostprocessor`` picks ``top_n`` retrieved nodes with SIFT.

Importing this module imports ``llama_index.core`` (``pip install 'qdrant-sift[llamaindex]'``);
importing ``qdrant_sift.client`` does not.

Vectors: the query's from ``QueryBundle.embedding`` when the retriever set it (LlamaIndex's vector
retrievers do), else ``QueryBundle.embedding_strs`` embedded with ``embed_model`` (several strings
become several SIFT targets); each node's from ``node.embedding`` when present, else its
``MetadataMode.EMBED`` content embedded with ``embed_model`` — pass the index's embed model so
nodes and query share a space.

Output: nodes in selection order. ``NodeWithScore.score`` is the pick's *gain* (share of the
prompt's prior uncertainty it removed given the earlier picks), not an independent relevance;
keep the order. Each returned node is a copy whose metadata gains ``sift_uncertainty`` (σ²ₙ
after the pick) and ``sift_rank``, both hidden from the LLM and embed text.
"""

from __future__ import annotations

from typing import Any, cast

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "qdrant_sift.client.llamaindex needs llama-index-core: "
        "pip install 'qdrant-sift[llamaindex]'"
    ) from exc

from qdrant_sift.client._rerank import (
    RerankResult,
    as_vectors,
    check_count,
    fill_vectors,
    options_of,
    select_results,
)
from qdrant_sift.client.embed import embed_queries, embed_texts, resolve_embedder
from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import RERANK_DEFAULTS

__all__ = ["SiftEmbedding", "SiftNodePostprocessor"]

_KEYS = ("sift_uncertainty", "sift_rank", "retrieval_score")


class SiftEmbedding(BaseEmbedding):
    """A qdrant_sift ``Embedder`` (default: the offline MiniLM) as a LlamaIndex embed model, so
    an index and the postprocessor embed in one space without a hosted model."""

    embedder: Any = Field(default=None, description="qdrant_sift Embedder; None: MiniLM.")
    _resolved: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SiftEmbedding"

    def _get(self) -> Any:
        if self._resolved is None:
            self._resolved = resolve_embedder(self.embedder)
        return self._resolved

    def _get_query_embedding(self, query: str) -> list[float]:
        return cast("list[float]", embed_queries(self._get(), [query])[0].tolist())

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return cast("list[float]", embed_texts(self._get(), [text])[0].tolist())

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return cast("list[list[float]]", embed_texts(self._get(), texts).tolist()) if texts else []


class SiftNodePostprocessor(BaseNodePostprocessor):
    """Keep the ``top_n`` nodes SIFT picks for the query, in selection order.

    ``lam`` is SIFT's noise variance λ (small → diverse, large → nearest neighbours), unrelated
    to MMR's ``mmr_threshold``/``lambda_mult``; with ``strategy="mmr"``, ``diversity`` is
    1 − ``mmr_threshold``.
    """

    top_n: int = Field(default=5, description="How many nodes to keep.")
    embed_model: Any = Field(
        default=None,
        description=(
            "LlamaIndex BaseEmbedding or qdrant_sift Embedder; default Settings.embed_model "
            "when one was set, else the offline MiniLM."
        ),
    )
    strategy: str = Field(
        default=RERANK_DEFAULTS.strategy, description="sift, nearest, mmr or random."
    )
    lam: float = Field(
        default=RERANK_DEFAULTS.lam, description="SIFT noise variance λ (not MMR's lambda)."
    )
    alpha: float | None = Field(
        default=RERANK_DEFAULTS.alpha, description="Adaptive stopping; None: off."
    )
    unique: bool = Field(
        default=RERANK_DEFAULTS.unique, description="Return each node at most once."
    )
    diversity: float = Field(
        default=RERANK_DEFAULTS.diversity, description="MMR diversity (strategy='mmr')."
    )
    reranker: Any = Field(default=None, description="Object with select(); default in-process.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retriever's score in metadata['retrieval_score']."
    )

    @classmethod
    def class_name(cls) -> str:
        return "SiftNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InvalidInputError("SiftNodePostprocessor needs a query (query_bundle/query_str)")
        top_n = check_count(self.top_n, "top_n")
        if not nodes or top_n == 0:
            return []
        cache: list[Any] = []

        def get_embedder() -> Any:
            if not cache:
                model = (
                    self.embed_model if self.embed_model is not None else _settings_embed_model()
                )
                cache.append(resolve_embedder(model))
            return cache[0]

        if query_bundle.embedding is not None:
            target = as_vectors(query_bundle.embedding, "QueryBundle.embedding")
        else:
            target = embed_queries(get_embedder(), query_bundle.embedding_strs)
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        candidates = fill_vectors(texts, [n.node.embedding for n in nodes], get_embedder)
        results = select_results(
            target, candidates, top_n, options_of(self), reranker=self.reranker
        )
        return [self._annotated(nodes[r.index], r, rank) for rank, r in enumerate(results)]

    def _annotated(self, item: NodeWithScore, result: RerankResult, rank: int) -> NodeWithScore:
        node = item.node
        metadata = {
            **node.metadata,
            "sift_uncertainty": result.uncertainty,
            "sift_rank": rank,
        }
        if self.keep_retrieval_score:
            metadata["retrieval_score"] = item.score
        hidden = [k for k in _KEYS if k in metadata]
        copy = node.model_copy(
            update={
                "metadata": metadata,
                "excluded_embed_metadata_keys": _merged(node.excluded_embed_metadata_keys, hidden),
                "excluded_llm_metadata_keys": _merged(node.excluded_llm_metadata_keys, hidden),
            }
        )
        return NodeWithScore(node=copy, score=result.relevance_score)


def _settings_embed_model() -> Any:
    """The embed model set on LlamaIndex's global ``Settings`` (the one indexes use), if any.

    Reads the private slot so an unset ``Settings`` does not resolve to OpenAI.
    """
    from llama_index.core import Settings

    return getattr(Settings, "_embed_model", None)


def _merged(keys: list[str], extra: list[str]) -> list[str]:
    return [*keys, *(k for k in extra if k not in keys)]
