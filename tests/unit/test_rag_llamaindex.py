"""SiftNodePostprocessor inside real llama-index-core: VectorStoreIndex retrieval and a
RetrieverQueryEngine (MockLLM, no network), with a deterministic embed model."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="needs the [llamaindex] extra (llama-index-core)")

from conftest_rag import CORPUS, QUERY, HashingEmbedder
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms.mock import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from qdrant_sift.client._rerank import rerank
from qdrant_sift.client.llamaindex import SiftNodePostprocessor
from qdrant_sift.errors import ConfigError, InvalidInputError

COPIES = {0, 1, 2}


class HashEmbedding(BaseEmbedding):
    """A LlamaIndex embed model over the hashing embedder (counts calls)."""

    _inner: HashingEmbedder = PrivateAttr(default_factory=HashingEmbedder)

    @property
    def inner(self) -> HashingEmbedder:
        return self._inner

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._inner.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._inner.embed_documents([text])[0]


def _nodes() -> list[TextNode]:
    return [TextNode(text=t, id_=f"n{i}", metadata={"i": i}) for i, t in enumerate(CORPUS)]


def _index(embed: HashEmbedding) -> VectorStoreIndex:
    nodes = _nodes()
    for node in nodes:  # embed only the text, so node vectors equal the hashing embedder's
        node.excluded_embed_metadata_keys = ["i"]
    return VectorStoreIndex(nodes, embed_model=embed)


def test_query_engine_uses_sift_picks_and_the_bundle_embedding() -> None:
    embed = HashEmbedding()
    index = _index(embed)
    retriever = index.as_retriever(similarity_top_k=len(CORPUS))
    post = SiftNodePostprocessor(top_n=3, embed_model=embed)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[post])
    queries_before = embed.inner.query_calls
    response = engine.query(QUERY)
    assert embed.inner.query_calls == queries_before + 1  # the retriever's; SIFT reused it
    picked = [n.node.metadata["i"] for n in response.source_nodes]
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())

    def canon(i: int) -> int:
        return -1 if i in COPIES else i  # copies 0 and 1 tie exactly

    assert [canon(i) for i in picked] == [canon(r.index) for r in ref]
    assert len(set(picked) & COPIES) == 1
    for rank, (n, r) in enumerate(zip(response.source_nodes, ref, strict=True)):
        assert n.score == pytest.approx(r.relevance_score, abs=1e-5)
        assert n.node.metadata["sift_uncertainty"] == pytest.approx(r.uncertainty, abs=1e-5)
        assert n.node.metadata["sift_rank"] == rank
        assert "sift_uncertainty" not in n.node.get_content(metadata_mode=MetadataMode.LLM)


def test_postprocess_embeds_query_and_nodes_when_missing() -> None:
    emb = HashingEmbedder()
    originals = [NodeWithScore(node=n, score=0.5) for n in _nodes()]
    for n in originals:
        n.node.excluded_embed_metadata_keys = ["i"]
    post = SiftNodePostprocessor(top_n=3, embed_model=emb, keep_retrieval_score=True)
    out = post.postprocess_nodes(originals, query_str=QUERY)
    assert emb.query_calls == 1 and emb.document_calls == 1
    ref = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert [n.node.metadata["i"] for n in out] == [r.index for r in ref]
    assert all(n.node.metadata["retrieval_score"] == 0.5 for n in out)
    assert "sift_rank" not in originals[0].node.metadata  # inputs are not mutated


def test_node_embeddings_and_several_query_strings() -> None:
    emb = HashingEmbedder()
    vectors = emb.embed_documents(CORPUS)
    nodes = [NodeWithScore(node=n) for n in _nodes()]
    for n, v in zip(nodes, vectors, strict=True):
        n.node.embedding = v
    spy = HashingEmbedder()
    bundle = QueryBundle(QUERY, custom_embedding_strs=["bananas potassium", "moon earth orbit"])
    out = SiftNodePostprocessor(top_n=2, embed_model=spy).postprocess_nodes(nodes, bundle)
    assert spy.document_calls == 0 and spy.query_calls == 2  # two SIFT targets
    assert {n.node.metadata["i"] for n in out} == {5, 6}


def test_errors_and_empty_input() -> None:
    post = SiftNodePostprocessor(top_n=2, embed_model=HashingEmbedder())
    nodes = [NodeWithScore(node=n) for n in _nodes()]
    with pytest.raises(InvalidInputError, match="needs a query"):
        post.postprocess_nodes(nodes)
    assert post.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ConfigError):
        SiftNodePostprocessor(top_n=-1, embed_model=HashingEmbedder()).postprocess_nodes(
            nodes, query_str=QUERY
        )
    assert SiftNodePostprocessor.class_name() == "SiftNodePostprocessor"


def test_sift_embedding_as_the_index_embed_model() -> None:
    from qdrant_sift.client.llamaindex import SiftEmbedding

    inner = HashingEmbedder()
    embed = SiftEmbedding(embedder=inner)
    assert embed.get_query_embedding(QUERY) == HashingEmbedder().embed_query(QUERY)
    index = VectorStoreIndex(
        [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(CORPUS)], embed_model=embed
    )
    nodes = index.as_retriever(similarity_top_k=len(CORPUS)).retrieve(QUERY)
    out = SiftNodePostprocessor(top_n=3, embed_model=embed).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert len({CORPUS.index(n.node.get_content()) for n in out} & COPIES) == 1
    assert inner.document_calls >= 2  # the index, then the postprocessor (nodes lack vectors)


def test_defaults_to_the_embed_model_set_on_settings() -> None:
    from llama_index.core import Settings

    embed = HashEmbedding()
    previous = Settings._embed_model
    Settings.embed_model = embed
    try:
        out = SiftNodePostprocessor(top_n=3).postprocess_nodes(
            [NodeWithScore(node=TextNode(text=t)) for t in CORPUS], query_str=QUERY
        )
    finally:
        Settings._embed_model = previous
    assert embed.inner.query_calls == 1 and embed.inner.document_calls >= 1
    assert len({CORPUS.index(n.node.get_content()) for n in out} & COPIES) == 1
