"""The wire shapes of text reranking: Cohere v2 and TEI JSON (HTTP), ``RerankTexts`` (gRPC).

Each function maps one request shape onto :meth:`TextReranker.rerank` and its answer back, and
returns ``(response, log fields)``. Fields a shape cannot honour are refused with
:class:`~qdrant_sift.errors.InvalidInputError` naming them (HTTP 422), never dropped when they
would change the result; the SIFT options (:data:`EXTENSION_FIELDS`) are optional everywhere.
"""

from __future__ import annotations

from typing import Any

from qdrant_sift import errors
from qdrant_sift.v1 import reranker_pb2 as pb

from ._matrix import strategy_from_proto, wire_float
from ._text import TextOutcome, TextReranker

__all__ = [
    "COHERE_FIELDS",
    "EXTENSION_FIELDS",
    "TEI_FIELDS",
    "cohere_rerank",
    "rerank_texts",
    "tei_rerank",
]

#: SIFT options any rerank request may carry (clients that do not know them never send them).
EXTENSION_FIELDS = frozenset({"strategy", "lam", "alpha", "unique", "diversity", "seed"})
#: Cohere rerank fields understood; ``model`` and ``priority`` are accepted and ignored;
#: ``return_documents`` (Cohere v1, sent by v1 clients and LiteLLM) adds each pick's text.
COHERE_FIELDS = frozenset({"model", "query", "documents", "top_n", "max_tokens_per_doc"})
COHERE_FIELDS |= {"priority", "return_documents"}
TEI_FIELDS = frozenset(
    {"query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"}
)


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise errors.InvalidInputError(f"{key} must be true or false, got {value!r}")
    return value


def _extensions(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in EXTENSION_FIELDS if body.get(k) is not None}


def _unknown(body: dict[str, Any], known: frozenset[str], api: str) -> None:
    extra = sorted(set(body) - known - EXTENSION_FIELDS)
    if extra:
        raise errors.InvalidInputError(
            f"unsupported field(s) {', '.join(extra)} for {api}; supported: "
            f"{', '.join(sorted(known | EXTENSION_FIELDS))} (see docs/http.md)"
        )


def _info(outcome: TextOutcome, docs: Any) -> dict[str, Any]:
    return {"documents": len(docs) if isinstance(docs, list) else 0, "picked": len(outcome.picks),
            "strategy": outcome.strategy, "embedded": outcome.embedded,
            "cache_hits": outcome.cache_hits, "stored_hits": outcome.stored_hits}  # fmt: skip


def _check_max_tokens(engine: TextReranker, value: Any) -> None:
    """Cohere's ``max_tokens_per_doc``: fine when the embedder truncates there or earlier."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.InvalidInputError(f"max_tokens_per_doc must be an integer >= 1, got {value!r}")
    window = getattr(engine.embedder, "max_length", None)
    if not isinstance(window, int) or value < window:
        raise errors.InvalidInputError(
            f"max_tokens_per_doc={value} cannot be honoured: the server's embedder truncates at "
            f"its own window ({window or 'none'} tokens); send a value >= it or leave it out"
        )


def cohere_rerank(
    engine: TextReranker, body: dict[str, Any], rid: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``POST /v2/rerank`` and ``/v1/rerank``: Cohere's request and response (plus a ``sift``
    object); with ``return_documents`` each result carries ``document: {"text"}`` (Cohere v1)."""
    _unknown(body, COHERE_FIELDS, "/v2/rerank (Cohere)")
    with_docs = _flag(body, "return_documents", False)
    docs = body.get("documents")
    if isinstance(docs, list):  # Cohere v1 clients send {"text": ...} objects
        docs = [d["text"] if isinstance(d, dict) and "text" in d else d for d in docs]
    _check_max_tokens(engine, body.get("max_tokens_per_doc"))
    outcome = engine.rerank(body.get("query"), docs, body.get("top_n"), **_extensions(body))
    picks = outcome.picks
    results: list[dict[str, Any]] = [
        {"index": p.index, "relevance_score": p.relevance_score} for p in picks
    ]
    if with_docs:  # a checked list of str by now
        texts: list[str] = docs  # type: ignore[assignment]
        for item in results:
            item["document"] = {"text": texts[item["index"]]}
    payload = {
        "id": rid,
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        "sift": {"strategy": outcome.strategy, "prior_variance": outcome.prior_variance,
                 "stopped_early": outcome.stopped_early, "gains": [p.gain for p in picks],
                 "variances": [p.variance for p in picks], "embedded": outcome.embedded,
                 "cache_hits": outcome.cache_hits, "stored_hits": outcome.stored_hits},
    }  # fmt: skip
    return payload, _info(outcome, docs)


def tei_rerank(
    engine: TextReranker, body: dict[str, Any], rid: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``POST /rerank``: text-embeddings-inference's request and response."""
    _unknown(body, TEI_FIELDS, "/rerank (TEI)")
    raw, with_text = _flag(body, "raw_scores", False), _flag(body, "return_text", False)
    if body.get("truncate") is False:
        raise errors.InvalidInputError(
            "truncate=false cannot be honoured: this server always truncates at the "
            "embedder's window (like TEI started with --auto-truncate); leave it out"
        )
    direction = body.get("truncation_direction")
    if direction is not None and str(direction).lower() != "right":
        raise errors.InvalidInputError(
            f"truncation_direction={direction!r} is not supported: the embedder keeps the "
            "start of each text (Right)"
        )
    texts = body.get("texts")
    outcome = engine.rerank(body.get("query"), texts, None, **_extensions(body))
    out = []
    for p in outcome.picks:
        item: dict[str, Any] = {"index": p.index, "score": p.gain if raw else p.relevance_score}
        if with_text:
            item["text"] = texts[p.index]  # type: ignore[index]  # a checked list by now
        out.append(item)
    return out, _info(outcome, texts)


def rerank_texts(
    engine: TextReranker, req: pb.RerankTextsRequest
) -> tuple[pb.RerankTextsResponse, dict[str, Any]]:
    """gRPC ``RerankTexts``: unset fields take the text reranker's defaults (``unique=True``)."""
    opts: dict[str, Any] = {"strategy": strategy_from_proto(req.strategy)}
    for name in ("lam", "alpha", "diversity"):
        if req.HasField(name):
            opts[name] = wire_float(getattr(req, name))
    for name in ("unique", "seed"):
        if req.HasField(name):
            opts[name] = getattr(req, name)
    top_n = int(req.top_n) if req.HasField("top_n") else None
    outcome = engine.rerank(req.query, list(req.documents), top_n, **opts)
    results = [
        pb.RerankedDocument(
            index=p.index, relevance_score=p.relevance_score, gain=p.gain, variance=p.variance
        )
        for p in outcome.picks
    ]
    response = pb.RerankTextsResponse(
        results=results, prior_variance=outcome.prior_variance,
        stopped_early=outcome.stopped_early, strategy=outcome.strategy,
        embedded=outcome.embedded, cache_hits=outcome.cache_hits,
        stored_hits=outcome.stored_hits,
    )  # fmt: skip
    return response, _info(outcome, list(req.documents))
