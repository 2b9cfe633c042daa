"""SiftRanker in a real Haystack pipeline after qdrant-haystack's QdrantEmbeddingRetriever
(return_embedding=True) over qdrant-client local mode."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
pytest.importorskip("haystack", reason="needs the [haystack] extra (haystack-ai)")

from conftest_rag import CORPUS, QUERY, HashingEmbedder
from haystack import Document, Pipeline

from qdrant_sift.client._rerank import rerank
from qdrant_sift.client.haystack import SiftRanker
from qdrant_sift.errors import ConfigError, InvalidInputError

COPIES = {0, 1, 2}


def _canon(i: int) -> int:
    return -1 if i in COPIES else i  # copies 0 and 1 tie exactly; either may win


def _documents(with_embeddings: bool) -> list[Document]:
    emb = HashingEmbedder()
    vectors = emb.embed_documents(CORPUS) if with_embeddings else [None] * len(CORPUS)
    return [
        Document(content=t, meta={"i": i}, embedding=v)
        for i, (t, v) in enumerate(zip(CORPUS, vectors, strict=True))
    ]


def test_pipeline_after_qdrant_embedding_retriever() -> None:
    pytest.importorskip("haystack_integrations.document_stores.qdrant", reason="qdrant-haystack")
    from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    store = QdrantDocumentStore(
        location=":memory:", embedding_dim=256, recreate_index=True, progress_bar=False
    )
    store.write_documents(_documents(with_embeddings=True))
    spy = HashingEmbedder()
    pipeline = Pipeline()
    pipeline.add_component(
        "retriever", QdrantEmbeddingRetriever(store, top_k=len(CORPUS), return_embedding=True)
    )
    pipeline.add_component("ranker", SiftRanker(embedder=spy, top_k=3))
    pipeline.connect("retriever.documents", "ranker.documents")
    q = HashingEmbedder().embed_query(QUERY)
    out = pipeline.run(
        {"retriever": {"query_embedding": q}, "ranker": {"query_embedding": q}},
        include_outputs_from={"retriever"},
    )
    docs = out["ranker"]["documents"]
    assert spy.document_calls == 0 and spy.query_calls == 0  # every vector came from Qdrant
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert [_canon(d.meta["i"]) for d in docs] == [_canon(r.index) for r in ref]
    for rank, (d, r) in enumerate(zip(docs, ref, strict=True)):
        assert d.score == pytest.approx(r.relevance_score, abs=1e-5)
        assert d.meta["sift_uncertainty"] == pytest.approx(r.uncertainty, abs=1e-5)
        assert d.meta["sift_rank"] == rank
    nearest = [d.meta["i"] for d in out["retriever"]["documents"]][:3]
    assert set(nearest) == COPIES  # the retriever's own top 3: the near-copies SIFT avoids


def test_run_embeds_query_text_and_documents_without_vectors() -> None:
    spy = HashingEmbedder()
    ranker = SiftRanker(embedder=spy, top_k=3)
    docs = _documents(with_embeddings=False)
    out = ranker.run(documents=docs, query=QUERY)["documents"]
    assert spy.query_calls == 1 and spy.document_calls == 1
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert [d.meta["i"] for d in out] == [r.index for r in ref]
    assert [d.id for d in out] == [docs[r.index].id for r in ref]
    assert docs[0].score is None and "sift_rank" not in docs[0].meta  # inputs untouched
    assert len(ranker.run(documents=docs, query=QUERY, top_k=1)["documents"]) == 1


def test_errors_and_empty_input() -> None:
    ranker = SiftRanker(embedder=HashingEmbedder())
    with pytest.raises(InvalidInputError, match="query_embedding or a non-empty query"):
        ranker.run(documents=_documents(True))
    assert ranker.run(documents=[], query=QUERY) == {"documents": []}
    with pytest.raises(ConfigError):
        SiftRanker(top_k=-2)
    with pytest.raises(ConfigError):
        ranker.run(documents=_documents(True), query=QUERY, top_k=-1)


def test_indexing_and_query_pipelines_with_sift_embedders() -> None:
    pytest.importorskip("haystack_integrations.document_stores.qdrant", reason="qdrant-haystack")
    from haystack.components.writers import DocumentWriter
    from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    from qdrant_sift.client.haystack import SiftDocumentEmbedder, SiftTextEmbedder

    embedder = HashingEmbedder()
    store = QdrantDocumentStore(
        location=":memory:", embedding_dim=256, recreate_index=True, progress_bar=False
    )
    indexing = Pipeline()
    indexing.add_component("embed", SiftDocumentEmbedder(embedder))
    indexing.add_component("write", DocumentWriter(store))
    indexing.connect("embed.documents", "write.documents")
    indexing.run({"embed": {"documents": _documents(with_embeddings=False)}})
    assert store.count_documents() == len(CORPUS)

    querying = Pipeline()
    querying.add_component("text", SiftTextEmbedder(embedder))
    querying.add_component("retriever", QdrantEmbeddingRetriever(store, return_embedding=True))
    querying.add_component("ranker", SiftRanker(embedder, top_k=3))
    querying.connect("text.embedding", "retriever.query_embedding")
    querying.connect("text.embedding", "ranker.query_embedding")
    querying.connect("retriever.documents", "ranker.documents")
    calls = embedder.document_calls
    docs = querying.run({"text": {"text": QUERY}})["ranker"]["documents"]
    assert embedder.document_calls == calls  # the ranker used the stored vectors
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert [_canon(d.meta["i"]) for d in docs] == [_canon(r.index) for r in ref]
