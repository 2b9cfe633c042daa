"""Text-level reranking, shared by the HTTP endpoints and the gRPC ``RerankTexts`` RPC.

:class:`TextReranker` takes a query and document texts, embeds them with the server's embedder
(only what it has not seen: an LRU :class:`~._embed_cache.EmbeddingCache` keyed by the content
hash of each text, then, when attached, the stored vector of a Qdrant collection point whose
``text`` payload has that hash, :class:`~._embed_cache.StoredVectors`), runs the server's
selector and returns the picks in selection order. Every check
(limits, options, cost) runs before any embedding, with the typed errors of
:mod:`qdrant_sift.errors`, so HTTP and gRPC refuse the same input the same way.

Scores of a pick n (σ²ₙ: the query's posterior variance after n picks, σ²₀ its prior):

* ``gain`` = (σ²ₙ₋₁ − σ²ₙ) / σ²₀, the share of the prior variance this pick removed given the
  picks before it (what in-process :func:`qdrant_sift.client.rerank` calls ``relevance_score``);
* ``relevance_score`` = min(gain₁ … gainₙ), the running minimum of the gains: equal to the gain
  whenever the gains fall (the usual case) and never rising, so a client that re-sorts by score
  keeps the selection order (greedy variance reduction is not submodular, so a later gain can
  exceed an earlier one now and then).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from qdrant_sift import errors
from qdrant_sift.errors import ServerLimitError
from qdrant_sift.options import RERANK_DEFAULTS, SelectOptions, check_options

from ._cancel import checkpoint
from ._embed_cache import EmbeddingCache, StoredVectors, content_hash, prefixed_hashes
from ._gains import relative_gains
from ._limits import Limits, check_cost, selection_cost

__all__ = [
    "NotInline",
    "Pick",
    "TextOutcome",
    "TextReranker",
    "check_text_call",
    "inline_only",
]

log = logging.getLogger("qdrant_sift.reranker.service")
#: Texts embedded per model call; cancellation and deadlines are checked between chunks.
_EMBED_CHUNK = 64
#: The selector options a text rerank takes (unset ones take the defaults, ``unique=True``).
_OPTION_NAMES = frozenset({"strategy", "lam", "alpha", "unique", "diversity", "seed"})


#: Inside :func:`inline_only`: the most selection work (multiply-adds) a call may do there.
_INLINE_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "qdrant_sift_inline_budget", default=None
)


class NotInline(Exception):  # a signal to the caller, not an error
    """Raised inside :func:`inline_only` before a call does anything but cached work: the
    embedder is not loaded yet, a text is not cached (embedding or a stored-vector lookup
    would follow), or the selection exceeds the budget. Nothing was counted in the metrics;
    run the call again outside the block."""


@contextlib.contextmanager
def inline_only(max_cost: int) -> Iterator[None]:
    """Run the block's :meth:`TextReranker.rerank` calls only when they are cheap: every text
    cached and a selection of at most ``max_cost`` multiply-adds (see
    :func:`~._limits.selection_cost`), else :class:`NotInline`. The HTTP server runs warm calls
    on its event loop this way and sends the others to its worker threads."""
    token = _INLINE_BUDGET.set(int(max_cost))
    try:
        yield
    finally:
        _INLINE_BUDGET.reset(token)


class Pick(NamedTuple):
    """One pick in selection order: ``index`` into the documents, the monotone
    ``relevance_score``, the pick's own ``gain`` and ``variance`` σ²ₙ (see the module docs).
    A named tuple: built once per pick on the warm path, where a frozen dataclass costs more."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the field name the APIs use
    relevance_score: float
    gain: float
    variance: float


@dataclass(frozen=True)
class TextOutcome:
    """A text rerank: picks in selection order and how the documents got their vectors."""

    picks: list[Pick]
    prior_variance: float
    stopped_early: bool
    strategy: str
    embedded: int
    cache_hits: int
    stored_hits: int


def check_text_call(
    query: Any, documents: Any, top_n: Any, options: dict[str, Any]
) -> tuple[list[str], int | None, dict[str, Any], bool]:
    """What a text rerank call gets wrong whatever the server's limits: ``(documents, top_n or
    None, selector options with the text defaults filled in, whether each document is picked at
    most once)``. Raises :class:`~qdrant_sift.errors.InvalidInputError` /
    :class:`~qdrant_sift.errors.ConfigError`; shared by the server and ``RemoteReranker``."""
    if not isinstance(query, str) or not query.strip():
        raise errors.InvalidInputError("query must be a non-empty string")
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise errors.InvalidInputError("documents must be a list of strings")
    docs = list(documents)
    if not docs:
        raise errors.InvalidInputError("documents is empty: send at least one document")
    if set(map(type, docs)) != {str}:  # one pass in C; the loop below only names the culprit
        for i, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise errors.InvalidInputError(
                    f"documents[{i}] must be a string, got {type(doc).__name__}"
                )
    if top_n is not None and (
        isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1
    ):
        raise errors.InvalidInputError(f"top_n must be an integer >= 1, got {top_n!r}")
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise errors.InvalidInputError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(_OPTION_NAMES))}"
        )
    # The reranking defaults (a reranker returns each document once, as in-process rerank()
    # does). An option given as None takes its default.
    d = RERANK_DEFAULTS
    opts = {"strategy": d.strategy, "lam": d.lam, "alpha": d.alpha, "unique": d.unique}
    opts |= {"diversity": d.diversity, "seed": d.seed}
    opts |= {k: v for k, v in options.items() if v is not None}
    checked = check_options(
        len(docs) if top_n is None else top_n, opts["strategy"], opts["lam"], opts["alpha"],
        opts["unique"], True, opts["diversity"], opts["seed"],
    )  # fmt: skip
    unique_like = not SelectOptions(strategy=checked.strategy, unique=checked.unique).repeats
    return docs, None if top_n is None else int(top_n), opts, unique_like


class _TextMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.cache_hits = Counter(
            "qdrant_sift_embed_cache_hits",
            "Texts whose embedding came from the LRU cache, by kind (query/document).",
            ["kind"],
            **kw,
        )
        self.stored_hits = Counter(
            "qdrant_sift_embed_stored_hits",
            "Documents whose vector came from the attached collection (matched by content hash).",
            **kw,
        )
        self.embedded = Counter(
            "qdrant_sift_embedded_texts", "Texts run through the embedder, by kind.", ["kind"], **kw
        )
        self.cache_size = Gauge(
            "qdrant_sift_embed_cache_entries", "Embeddings held by the LRU cache.", **kw
        )
        # the children every warm call updates, looked up once (labels() takes a lock each time)
        self.query_hits = self.cache_hits.labels(kind="query")
        self.document_hits = self.cache_hits.labels(kind="document")


class TextReranker:
    """Query + document texts -> picks in selection order, over the server's selector.

    ``embedder`` is an :class:`~qdrant_sift.client.embed.Embedder` or a thunk returning one
    (``None``: the offline MiniLM on first use). Embedding calls are serialised (one model,
    its own threads); ``stored`` adds vectors reused from a collection.
    """

    def __init__(
        self,
        selector: Any,
        limits: Limits,
        registry: CollectorRegistry,
        embedder: Any = None,
        *,
        cache_size: int = 50_000,
        stored: StoredVectors | None = None,
        device: str | None = None,
    ) -> None:
        self._selector, self.limits, self._device = selector, limits, device
        self._embedder_arg = embedder
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self._init_lock = threading.Lock()
        self.cache = EmbeddingCache(cache_size)
        self.stored = stored
        self.metrics = _TextMetrics(registry)

    @property
    def embedder(self) -> Any:
        if self._embedder is None:  # not the embedding lock: a cached call never waits on one
            if _INLINE_BUDGET.get() is not None:
                raise NotInline("the embedder is not loaded yet")
            with self._init_lock:
                if self._embedder is None:
                    arg = self._embedder_arg
                    if arg is None:
                        from qdrant_sift.client.embed import default_embedder

                        arg = default_embedder(self._device)
                    elif callable(arg) and not hasattr(arg, "embed_documents"):
                        arg = arg()
                    self._embedder = arg
        return self._embedder

    @property
    def selects_on_cpu(self) -> bool:
        """Whether the selector runs on the CPU (its ``device`` says so; a selector without one
        counts as not). The HTTP server runs warm calls on its event loop only then: a CUDA
        selection can wait behind other work queued on the device, such as an embedding batch,
        and the loop must never wait."""
        device = getattr(self._selector, "device", None)
        return getattr(device, "type", device) == "cpu"

    def warmup(self) -> None:
        """Load the embedder now (a model load takes seconds; pay it before serving)."""
        self._embed([("q", "warm up")], cache=False)

    # --- checks (before any work) ---------------------------------------------------------------

    def check(
        self, query: Any, documents: Any, top_n: Any, options: dict[str, Any]
    ) -> tuple[list[str], int, dict[str, Any]]:
        """Validated ``(documents, n, selector options)``; raises typed errors, does no work:
        first what the call itself gets wrong (:func:`check_text_call`, also run by
        ``RemoteReranker.rerank_texts`` before sending), then this server's limits."""
        docs, top, opts, unique_like = check_text_call(query, documents, top_n, options)
        lim = self.limits
        if len(query) > lim.max_document_chars:
            raise ServerLimitError.exceeded(
                "max_document_chars", len(query), lim.max_document_chars, "query length"
            )
        if len(docs) > lim.max_documents:
            raise ServerLimitError.exceeded(
                "max_documents", len(docs), lim.max_documents, "documents"
            )
        if max(map(len, docs)) > lim.max_document_chars:
            for i, doc in enumerate(docs):
                if len(doc) > lim.max_document_chars:
                    raise ServerLimitError.exceeded(
                        "max_document_chars", len(doc), lim.max_document_chars,
                        f"documents[{i}] length",
                    )  # fmt: skip
        n = len(docs) if top is None else top
        if unique_like:
            n = min(n, len(docs))
        if n > lim.max_n:
            raise ServerLimitError.exceeded("max_n", n, lim.max_n, "top_n")
        check_cost(selection_cost(len(docs), n, self.embedder.dim, 1), lim)
        return docs, n, opts

    # --- embedding ----------------------------------------------------------------------------

    def _embed(self, items: list[tuple[str, str]], *, cache: bool = True) -> list[np.ndarray]:
        """Vectors for ``(kind, text)`` items (kind ``"q"`` or ``"d"``): uncached ones embedded
        in chunks, with a cancellation check before each."""
        from qdrant_sift.client.embed import embed_queries, embed_texts

        out: list[np.ndarray] = []
        embedder = self.embedder
        queries = [t for k, t in items if k == "q"]
        docs = [t for k, t in items if k == "d"]
        with self._embed_lock:
            if queries:
                checkpoint()
                out += list(embed_queries(embedder, queries))
            for start in range(0, len(docs), _EMBED_CHUNK):
                checkpoint()
                out += list(embed_texts(embedder, docs[start : start + _EMBED_CHUNK]))
        if queries:
            self.metrics.embedded.labels(kind="query").inc(len(queries))
        if docs:
            self.metrics.embedded.labels(kind="document").inc(len(docs))
        return out

    def _vectors(self, query: str, docs: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(1, d) query, (K, d) documents and [embedded, cache hits, stored hits]."""
        qkey = b"q" + content_hash(query)
        qvec = self.cache.get(qkey)
        keys = prefixed_hashes(b"d", docs)
        distinct = list(dict.fromkeys(keys))
        rows = self.cache.get_many(distinct)
        if (qvec is None or len(rows) < len(distinct)) and _INLINE_BUDGET.get() is not None:
            raise NotInline("a text is not cached")  # before any metric or embedding
        if qvec is None:
            qvec = self._embed([("q", query)])[0]
            self.cache.put(qkey, qvec)
        else:
            self.metrics.query_hits.inc()
        hits = len(keys) if len(rows) == len(distinct) else sum(1 for k in keys if k in rows)
        missing = [k for k in distinct if k not in rows]
        stored = 0
        if missing and self.stored is not None and len(self.stored):
            try:
                found = self.stored.lookup([k[1:] for k in missing])
            except errors.StoreError:  # the collection is an optimisation: embed instead
                log.warning("stored-vector lookup failed; embedding", exc_info=True)
                found = {}
            for key in missing:
                vec = found.get(key[1:])
                if vec is not None and vec.shape == qvec.shape:
                    rows[key] = vec
                    self.cache.put(key, vec)
            stored = sum(1 for k in keys if k[1:] in found)
            missing = [k for k in missing if k not in rows]
        if missing:
            text_of = dict(zip(keys, docs, strict=True))
            fresh = self._embed([("d", text_of[k]) for k in missing])
            for key, vec in zip(missing, fresh, strict=True):
                rows[key] = vec
                self.cache.put(key, vec)
        if hits:
            self.metrics.document_hits.inc(hits)
        if stored:
            self.metrics.stored_hits.inc(stored)
        self.metrics.cache_size.set(len(self.cache))
        # rows all have the query's shape (d,): one concatenate is ~3x faster than np.stack
        cands = np.concatenate([rows[k] for k in keys]).reshape(len(keys), -1)
        if cands.dtype != np.float32:  # cached rows are float32 already; stored ones may not be
            cands = cands.astype(np.float32)
        return np.asarray(qvec, np.float32)[None, :], cands, [len(missing), hits, stored]

    # --- the call -----------------------------------------------------------------------------

    def rerank(self, query: Any, documents: Any, top_n: Any = None, **options: Any) -> TextOutcome:
        """Check, embed what is needed, select; ``options``: strategy, lam, alpha, unique,
        diversity, seed (unset ones take the reranker defaults, ``unique=True``)."""
        docs, n, opts = self.check(query, documents, top_n, options)
        budget = _INLINE_BUDGET.get()
        if budget is not None and selection_cost(len(docs), n, self.embedder.dim) > budget:
            raise NotInline("the selection is too big to run inline")
        q, cands, (embedded, hits, stored) = self._vectors(query, docs)
        if q.shape[1] != cands.shape[1]:
            raise errors.DimensionMismatchError(
                f"query has {q.shape[1]} dimensions, documents {cands.shape[1]}"
            )
        checkpoint()
        sel = self._selector.select(q[0], cands, n, normalize=True, **opts)
        prior = float(sel.prior_variance)
        picks: list[Pick] = []
        floor = float("inf")
        variances = np.asarray(sel.variances, dtype=np.float64).tolist()
        gains = relative_gains(variances, prior)
        for index, gain, variance in zip(
            np.asarray(sel.indices).tolist(), gains, variances, strict=True
        ):
            floor = min(floor, gain)
            picks.append(Pick(int(index), floor, gain, float(variance)))
        return TextOutcome(
            picks, prior, bool(sel.stopped_early), str(sel.strategy), embedded, hits, stored
        )
