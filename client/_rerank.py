"""A Cohere-style ``rerank()`` over SIFT, and the selection core every RAG adapter shares.

Callers with only texts get ``rerank(query, documents, top_n) -> [RerankResult]``, the shape hosted
reranker APIs use. The scores are **not** independent relevances: SIFT picks greedily, so a
result's ``relevance_score`` is the *gain* of that pick given the picks before it — the fraction of
the prompt's prior uncertainty it removed. A near-duplicate of an earlier pick gains almost
nothing even if it is very similar to the query, which is the point. Keep the order given (it is
the selection order); do not re-sort by score.

No framework and no torch is imported here; the embedder and the selector load on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.client.embed import embed_queries, embed_texts, resolve_embedder
from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
)
from qdrant_sift.options import RERANK_DEFAULTS, SelectOptions, merge_options_over

__all__ = ["RerankResult", "rerank"]


@dataclass(frozen=True)
class RerankResult:
    """One pick, in selection order.

    ``index`` points into the ``documents`` passed in. ``relevance_score`` is the gain of this
    pick: (σ²ₙ₋₁ − σ²ₙ) / σ²₀, the share of the prompt's prior variance it removed given the picks
    before it (in [0, 1]; the scores of one call sum to at most 1). ``uncertainty`` is σ²ₙ, the
    prompt's posterior variance left after this pick.
    """

    index: int
    relevance_score: float
    uncertainty: float


# --- shared core (used by the LangChain, LlamaIndex and Haystack adapters) --------------------


def check_count(value: Any, name: str) -> int:
    """A non-negative int count (``k``, ``top_n``, ``top_k``) or a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def as_vectors(value: Any, name: str) -> np.ndarray:
    """A finite (n, d) float32 matrix from a vector, a list of vectors or an array (the one
    array rule, :func:`qdrant_sift.arrays.as_float32_matrix`)."""
    return as_float32_matrix(value, name, allow_vector=True, allow_empty=True)


def fill_vectors(
    texts: Sequence[str],
    vectors: Sequence[Any],
    embedder: Callable[[], Any],
) -> np.ndarray:
    """(K, d) candidate matrix: given vectors where present, the rest embedded in one batch.

    ``embedder`` is a thunk so a stack that already carries every vector never loads a model.
    """
    missing = [i for i, v in enumerate(vectors) if v is None]
    if not missing:  # the common stack: every vector came from Qdrant; convert in one go
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            matrix = None  # ragged: fall through to the per-row checks and their messages
        if matrix is not None and matrix.ndim == 2:
            return as_vectors(matrix, "document embeddings")
    filled: list[np.ndarray | None] = [
        None if v is None else as_vectors(v, f"embedding of document {i}")[0]
        for i, v in enumerate(vectors)
    ]
    if missing:
        new = embed_texts(embedder(), [texts[i] for i in missing])
        for row, i in enumerate(missing):
            filled[i] = new[row]
    dims = {v.shape[0] for v in filled if v is not None}
    if len(dims) > 1:
        raise DimensionMismatchError(
            f"document embeddings have different dimensions {sorted(dims)}: stored vectors and "
            "freshly embedded ones must come from the same model"
        )
    return np.stack([v for v in filled if v is not None]).astype(np.float32, copy=False)


#: The selection options a RAG adapter carries as fields of its own.
ADAPTER_OPTIONS = ("strategy", "lam", "alpha", "unique", "diversity")


def options_of(adapter: Any) -> SelectOptions:
    """The :class:`SelectOptions` an adapter's fields hold (the rest from RERANK_DEFAULTS)."""
    return replace(RERANK_DEFAULTS, **{name: getattr(adapter, name) for name in ADAPTER_OPTIONS})


def select_results(
    query: np.ndarray,
    candidates: np.ndarray,
    n: int,
    options: SelectOptions = RERANK_DEFAULTS,
    *,
    reranker: Any = None,
) -> list[RerankResult]:
    """Run the selector (``reranker.select`` or in-process ``select``) and turn its picks into
    gains. ``n`` is clipped to the candidate count when a candidate can be picked only once."""
    if candidates.shape[0] == 0 or n == 0:
        return []
    if query.shape[1] != candidates.shape[1]:
        raise DimensionMismatchError(
            f"query embedding has {query.shape[1]} dimensions, documents have "
            f"{candidates.shape[1]}: embed both with the same model"
        )
    n = options.clip_n(n, candidates.shape[0])
    if reranker is None:
        from qdrant_sift.reranker import select as run
    else:
        run = reranker.select
    selection = run(
        query if query.shape[0] > 1 else query[0],
        candidates,
        n,
        strategy=options.strategy,
        lam=options.lam,
        alpha=options.alpha,
        unique=options.unique,
        normalize=options.normalize,
        diversity=options.diversity,
        seed=options.seed,
    )
    from qdrant_sift.reranker import relative_gains

    variances = np.asarray(selection.variances, dtype=np.float64).tolist()
    gains = relative_gains(variances, float(selection.prior_variance))
    return [
        RerankResult(int(index), gain, float(variance))
        for index, gain, variance in zip(
            np.asarray(selection.indices).tolist(), gains, variances, strict=True
        )
    ]


# --- the facade -------------------------------------------------------------------------------


def _document_text(doc: Any, position: int) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        return str(doc["text"])
    raise InvalidInputError(
        f"documents[{position}] must be a str or a mapping with a 'text' str, got "
        f"{type(doc).__name__}"
    )


def rerank(
    query: str | Sequence[str] | None,
    documents: Sequence[str | Mapping[str, Any]],
    top_n: int | None = None,
    *,
    embedder: Any = None,
    query_embedding: Any = None,
    document_embeddings: Sequence[Any] | None = None,
    strategy: str = RERANK_DEFAULTS.strategy,
    lam: float = RERANK_DEFAULTS.lam,
    alpha: float | None = RERANK_DEFAULTS.alpha,
    unique: bool = RERANK_DEFAULTS.unique,
    diversity: float = RERANK_DEFAULTS.diversity,
    seed: int | None = RERANK_DEFAULTS.seed,
    reranker: Any = None,
    options: SelectOptions | None = None,
) -> list[RerankResult]:
    """Pick ``top_n`` of ``documents`` for ``query`` with SIFT, Cohere ``rerank`` style.

    Args:
        query: the prompt; a list of strings makes several targets (SIFT serves them jointly).
            May be ``None`` when ``query_embedding`` is given.
        documents: strings or ``{"text": ...}`` mappings (the shape Cohere accepts).
        top_n: how many to return (default: all, in selection order). Fewer come back when
            ``alpha`` stops early or ``unique`` runs out of documents.
        embedder: an ``Embedder``, LangChain ``Embeddings`` or LlamaIndex ``BaseEmbedding``;
            default the offline MiniLM. Only used for what is not given as a vector.
        query_embedding, document_embeddings: precomputed vectors (entries may be ``None``).
        lam: SIFT's noise variance λ (small: diverse picks; large: nearest neighbours). It is
            not MMR's ``lambda_mult``; for MMR pass ``strategy="mmr"`` and ``diversity`` =
            1 − ``lambda_mult``.
        unique: return each document at most once (default here, unlike fine-tuning selection,
            where a repeat is a second gradient step).
        seed: the ``random`` strategy's seed (other strategies are deterministic).
        reranker: anything with ``select(...)`` (``RemoteReranker`` for a GPU service).
        options: a :class:`~qdrant_sift.options.SelectOptions` instead of the option keywords
            (a keyword set away from its default beside it is a ``ConfigError``).

    Returns:
        :class:`RerankResult` per pick, in selection order; ``relevance_score`` is a gain, not an
        independent relevance (see the module docstring).
    """
    given = {"strategy": strategy, "lam": lam, "alpha": alpha, "unique": unique,
             "diversity": diversity, "seed": seed}  # fmt: skip
    chosen = merge_options_over(RERANK_DEFAULTS, options, given)
    docs = list(documents)
    texts = [_document_text(d, i) for i, d in enumerate(docs)]
    n = len(docs) if top_n is None else check_count(top_n, "top_n")
    if document_embeddings is not None and len(document_embeddings) != len(docs):
        raise InvalidInputError(
            f"{len(document_embeddings)} document_embeddings for {len(docs)} documents"
        )
    if not docs or n == 0:
        return []
    cache: list[Any] = []

    def get_embedder() -> Any:
        if not cache:
            cache.append(resolve_embedder(embedder))
        return cache[0]

    if query_embedding is not None:
        q = as_vectors(query_embedding, "query_embedding")
    elif query is None:
        raise InvalidInputError("rerank needs a query or a query_embedding")
    else:
        q = embed_queries(get_embedder(), [query] if isinstance(query, str) else list(query))
    vectors = list(document_embeddings) if document_embeddings is not None else [None] * len(docs)
    cands = fill_vectors(texts, vectors, get_embedder)
    opts = options if options is not None else replace(RERANK_DEFAULTS, **chosen)
    return select_results(q, cands, n, opts, reranker=reranker)
