"""SiftRetriever / SiftCompressor against real langchain-core, langchain-qdrant and
ContextualCompressionRetriever over qdrant-client local mode, plus langchain-tests' standard
retriever suite."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core", reason="needs the [langchain] extra (langchain-core)")
pytest.importorskip("langchain_qdrant", reason="needs langchain-qdrant")

import itertools

from conftest_rag import CORPUS, QUERY, HashingEmbedder
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models

from qdrant_sift.client import SiftClient
from qdrant_sift.client._rerank import rerank
from qdrant_sift.client.langchain import SiftCompressor, SiftRetriever
from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import ConfigError, InvalidInputError

COPIES = {0, 1, 2}  # near-duplicates of one facet of QUERY


class HashEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over the deterministic hashing embedder (counts calls)."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.fixture
def vector_store() -> QdrantVectorStore:
    client = QdrantClient(location=":memory:")
    client.create_collection(
        "lc", vectors_config=models.VectorParams(size=256, distance=models.Distance.COSINE)
    )
    store = QdrantVectorStore(client=client, collection_name="lc", embedding=HashEmbeddings())
    store.add_texts(CORPUS, metadatas=[{"source": i} for i in range(len(CORPUS))])
    return store


def _corpus_index(doc: Document) -> int:
    return CORPUS.index(doc.page_content)


def test_retriever_over_langchain_qdrant_collection_covers_facets(vector_store) -> None:
    retriever = SiftRetriever.from_vector_store(vector_store, k=3, fetch_k=50)
    docs = retriever.invoke(QUERY)
    picked = [_corpus_index(d) for d in docs]
    # Nearest neighbours return the three near-copies; SIFT takes one and covers the other facets.
    nearest = [_corpus_index(d) for d in vector_store.similarity_search(QUERY, k=3)]
    assert set(nearest) == COPIES
    assert len(set(picked) & COPIES) == 1
    assert {3, 4} <= set(picked)
    for rank, d in enumerate(docs):
        meta = d.metadata
        assert meta["source"] == _corpus_index(d)  # langchain-qdrant's nested metadata, lifted
        assert "metadata" not in meta and "page_content" not in meta
        assert meta["sift_rank"] == rank and meta["_collection_name"] == "lc"
        assert d.id == str(meta["_id"])
        assert 0.0 <= meta["relevance_score"] <= 1.0
    uncertainties = [d.metadata["sift_uncertainty"] for d in docs]
    assert all(a > b for a, b in itertools.pairwise(uncertainties))
    gains = [d.metadata["relevance_score"] for d in docs]
    assert gains[0] == pytest.approx(1.0 - uncertainties[0], abs=1e-5)
    assert gains[1] == pytest.approx(uncertainties[0] - uncertainties[1], abs=1e-5)


def test_retriever_matches_rerank_over_the_same_vectors(vector_store) -> None:
    docs = SiftRetriever.from_vector_store(vector_store, k=5).invoke(QUERY)
    ref = rerank(QUERY, CORPUS, 5, embedder=HashingEmbedder())

    def canon(i: int) -> int:
        return -1 if i in COPIES else i  # copies 0 and 1 tie exactly; either may win

    assert [canon(_corpus_index(d)) for d in docs] == [canon(r.index) for r in ref]
    np.testing.assert_allclose(
        [d.metadata["sift_uncertainty"] for d in docs], [r.uncertainty for r in ref], atol=1e-5
    )


def test_retriever_invoke_overrides_and_filter(vector_store) -> None:
    retriever = SiftRetriever.from_vector_store(vector_store, k=3)
    assert len(retriever.invoke(QUERY, k=1)) == 1
    assert retriever.invoke(QUERY, k=0) == []
    assert len(retriever.invoke(QUERY, k=2, strategy="nearest")) == 2
    assert retriever.invoke(QUERY, alpha=100.0) == []  # adaptive stopping: nothing worth it
    assert len(retriever.invoke(QUERY, k=5, alpha=1.05)) == 1  # α·n·σ_n: 0.96, then 1.83
    only = models.Filter(
        must=[models.FieldCondition(key="metadata.source", match=models.MatchAny(any=[4, 5, 6]))]
    )
    docs = retriever.invoke(QUERY, filter=only)
    assert {d.metadata["source"] for d in docs} <= {4, 5, 6} and len(docs) == 3
    with pytest.raises(InvalidInputError, match="unknown SiftRetriever options"):
        retriever.invoke(QUERY, lambda_mult=0.5)
    with pytest.raises(ConfigError):
        retriever.invoke(QUERY, k=-1)


def test_retriever_over_a_sift_client_collection() -> None:
    embedder = HashingEmbedder()
    client = SiftClient(
        store=QdrantStore("own", location=":memory:"), embedder=embedder, kernel="recall"
    )
    client.add_texts(CORPUS, [{"n": i} for i in range(len(CORPUS))])
    docs = SiftRetriever(client=client, k=3).invoke(QUERY)
    assert len({CORPUS.index(d.page_content) for d in docs} & COPIES) == 1
    assert all(d.metadata["n"] == CORPUS.index(d.page_content) for d in docs)


def test_compressor_fetches_dropped_vectors_by_id(vector_store) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    embeddings = vector_store.embeddings
    compressor = SiftCompressor.from_vector_store(vector_store, k=3)
    pipeline = ContextualCompressionRetriever(
        base_compressor=compressor,
        base_retriever=vector_store.as_retriever(search_kwargs={"k": len(CORPUS)}),
    )
    calls = embeddings.inner.document_calls
    docs = pipeline.invoke(QUERY)
    assert embeddings.inner.document_calls == calls  # vectors came from Qdrant, not re-embedded
    direct = SiftRetriever.from_vector_store(vector_store, k=3).invoke(QUERY)
    assert [d.metadata["_id"] for d in docs][1:] == [d.metadata["_id"] for d in direct][1:]
    assert [d.metadata["sift_rank"] for d in docs] == [0, 1, 2]
    np.testing.assert_allclose(
        [d.metadata["sift_uncertainty"] for d in docs],
        [d.metadata["sift_uncertainty"] for d in direct],
        atol=1e-5,
    )


def test_compressor_embeds_documents_without_vectors() -> None:
    embedder = HashingEmbedder()
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(CORPUS)]
    docs[3].metadata["embedding"] = embedder.embed_documents([CORPUS[3]])[0]
    out = SiftCompressor(embedder=embedder, k=3).compress_documents(docs, QUERY)
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert [d.metadata["i"] for d in out] == [r.index for r in ref]
    assert embedder.document_calls == 2  # once above, once for the seven without a vector
    assert "relevance_score" not in docs[0].metadata  # inputs are not mutated
    assert SiftCompressor(embedder=embedder, k=2).compress_documents([], QUERY) == []


def test_importing_the_client_does_not_import_langchain() -> None:
    import subprocess

    code = (
        "import sys, qdrant_sift.client, qdrant_sift.client._rerank; "
        "bad = [m for m in ('torch', 'langchain_core', 'llama_index', 'haystack') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- langchain-tests' standard retriever suite -------------------------------------------------

from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402


@functools.cache
def _standard_client() -> SiftClient:
    client = SiftClient(
        store=QdrantStore("std", location=":memory:"), embedder=HashingEmbedder(), kernel="recall"
    )
    client.add_texts(CORPUS)
    return client


@pytest.mark.anyio  # runs the suite's one async test with anyio's pytest plugin (asyncio)
class TestSiftRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @property
    def retriever_constructor(self) -> type[SiftRetriever]:
        return SiftRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"client": _standard_client(), "k": 2, "fetch_k": 20}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def test_sift_embeddings_write_a_collection_sift_can_read() -> None:
    from qdrant_sift.client.langchain import SiftEmbeddings

    embeddings = SiftEmbeddings(HashingEmbedder())
    store = QdrantVectorStore.from_texts(
        CORPUS, embeddings, location=":memory:", collection_name="wrapped"
    )
    assert embeddings.embed_documents([]) == []
    assert embeddings.embed_query(QUERY) == HashingEmbedder().embed_query(QUERY)
    docs = SiftRetriever.from_vector_store(store, k=3).invoke(QUERY)
    assert len({CORPUS.index(d.page_content) for d in docs} & COPIES) == 1


def test_compressor_embeds_what_the_store_cannot_supply(vector_store) -> None:
    base = vector_store.as_retriever(search_kwargs={"k": len(CORPUS)}).invoke(QUERY)
    docs = [Document(page_content=d.page_content, metadata=dict(d.metadata)) for d in base]
    docs[0].metadata["_id"] = "not-a-qdrant-id"
    docs[1].metadata["_collection_name"] = "another-collection"
    docs[2].metadata["_id"] = "00000000-0000-0000-0000-000000000000"  # valid, but not stored
    spy = HashEmbeddings()
    compressor = SiftCompressor(embedder=spy, store=vector_store, k=3)
    out = compressor.compress_documents(docs, QUERY)
    assert spy.inner.document_calls == 1  # one batch: just the three without a stored vector
    ref = rerank(QUERY, [d.page_content for d in docs], 3, embedder=HashingEmbedder())
    np.testing.assert_allclose(
        [d.metadata["sift_uncertainty"] for d in out], [r.uncertainty for r in ref], atol=1e-5
    )
