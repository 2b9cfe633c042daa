"""rerank(): the Cohere-style facade — picks, gains, uncertainties, inputs and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest_rag import CORPUS, QUERY, HashingEmbedder

from qdrant_sift.client._rerank import RerankResult, rerank
from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
    NonFiniteError,
)

COPIES = {0, 1, 2}
LAM = 0.01


def _posterior_variance(q: np.ndarray, X: np.ndarray, lam: float) -> float:
    """σ²_X(q) = k(q,q) − k_Xᵀ (K_XX + λI)⁻¹ k_X with the cosine kernel, by direct solve."""
    q = q / np.linalg.norm(q)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    K = X @ X.T + lam * np.eye(len(X))
    k = X @ q
    return float(q @ q - k @ np.linalg.solve(K, k))


def test_sift_covers_facets_where_nearest_returns_copies() -> None:
    sift = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    nearest = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder(), strategy="nearest")
    assert {r.index for r in nearest} == COPIES
    assert len({r.index for r in sift} & COPIES) == 1
    assert {3, 4} <= {r.index for r in sift}
    assert all(isinstance(r, RerankResult) for r in sift)


def test_uncertainties_are_posterior_variances_and_scores_are_gains() -> None:
    emb = HashingEmbedder()
    X = np.asarray(emb.embed_documents(CORPUS), np.float64)
    q = np.asarray(emb.embed_query(QUERY), np.float64)
    results = rerank(QUERY, CORPUS, 5, embedder=emb, lam=LAM)
    picked: list[int] = []
    previous = 1.0  # k(q, q) of a unit query
    for r in results:
        picked.append(r.index)
        expected = _posterior_variance(q, X[picked], LAM)
        assert r.uncertainty == pytest.approx(expected, abs=1e-5)
        assert r.relevance_score == pytest.approx(previous - expected, abs=1e-5)
        previous = expected
    # The first pick maximises <x, q>^2 / (1 + λ), and its gain is exactly that.
    first = (X @ q) ** 2 / (1 + LAM)
    assert first[results[0].index] == pytest.approx(first.max(), abs=1e-6)
    assert results[0].relevance_score == pytest.approx(first.max(), abs=1e-5)
    assert sum(r.relevance_score for r in results) <= 1.0 + 1e-9
    assert len({r.index for r in results}) == len(results)  # unique by default


def test_top_n_defaults_to_all_and_is_capped_when_unique() -> None:
    assert len(rerank(QUERY, CORPUS, embedder=HashingEmbedder())) == len(CORPUS)
    assert len(rerank(QUERY, CORPUS, 50, embedder=HashingEmbedder())) == len(CORPUS)
    repeats = rerank(QUERY, CORPUS[:2], 4, embedder=HashingEmbedder(), unique=False)
    assert len(repeats) == 4  # SIFT may pick a point again (a smaller, further reduction)
    uncertainties = [r.uncertainty for r in repeats]
    assert all(a >= b for a, b in itertools.pairwise(uncertainties))


def test_precomputed_vectors_skip_the_embedder() -> None:
    emb = HashingEmbedder()
    vectors = emb.embed_documents(CORPUS)
    spy = HashingEmbedder()
    out = rerank(QUERY, CORPUS, 3, embedder=spy, document_embeddings=vectors)
    assert spy.document_calls == 0 and spy.query_calls == 1
    q = emb.embed_query(QUERY)
    out2 = rerank(None, CORPUS, 3, embedder=spy, query_embedding=q, document_embeddings=vectors)
    assert spy.query_calls == 1
    assert [r.index for r in out] == [r.index for r in out2]
    partial = [vectors[i] if i % 2 else None for i in range(len(CORPUS))]
    out3 = rerank(QUERY, CORPUS, 3, embedder=spy, document_embeddings=partial)
    assert spy.document_calls == 1
    assert [r.index for r in out3] == [r.index for r in out]


def test_mappings_and_several_targets() -> None:
    docs = [{"text": t, "id": i} for i, t in enumerate(CORPUS)]
    as_dicts = rerank(QUERY, docs, 3, embedder=HashingEmbedder())
    as_strs = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder())
    assert as_dicts == as_strs
    two = rerank(["bananas potassium", "moon earth orbit"], CORPUS, 2, embedder=HashingEmbedder())
    assert {r.index for r in two} == {5, 6}  # one pick per target
    assert sum(r.relevance_score for r in two) <= 1.0 + 1e-9  # normalised by σ²₀ = 2


def test_other_strategies_and_adaptive_stopping() -> None:
    mmr = rerank(QUERY, CORPUS, 3, embedder=HashingEmbedder(), strategy="mmr", diversity=0.9)
    assert len(mmr) == 3 and len({r.index for r in mmr}) == 3
    stopped = rerank(QUERY, CORPUS, 5, embedder=HashingEmbedder(), alpha=100.0)
    assert stopped == []  # α·n·σ_n > 1 at the first pick: nothing is worth selecting


def test_bad_input_is_a_typed_error() -> None:
    emb = HashingEmbedder()
    assert rerank(QUERY, [], 3, embedder=emb) == []
    assert rerank(QUERY, CORPUS, 0, embedder=emb) == []
    with pytest.raises(ConfigError):
        rerank(QUERY, CORPUS, -1, embedder=emb)
    with pytest.raises(ConfigError):
        rerank(QUERY, CORPUS, 2.5, embedder=emb)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="documents\\[1\\]"):
        rerank(QUERY, ["ok", 3], 1, embedder=emb)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        rerank("  ", CORPUS, 1, embedder=emb)
    with pytest.raises(InvalidInputError, match="query or a query_embedding"):
        rerank(None, CORPUS, 1, embedder=emb)
    with pytest.raises(InvalidInputError, match="document_embeddings"):
        rerank(QUERY, CORPUS, 1, embedder=emb, document_embeddings=[[1.0, 0.0]])
    with pytest.raises(DimensionMismatchError):
        rerank(None, CORPUS, 1, embedder=emb, query_embedding=np.ones(3))
    mixed = [np.ones(4), *emb.embed_documents(CORPUS[1:])]
    with pytest.raises(DimensionMismatchError, match="same model"):
        rerank(QUERY, CORPUS, 1, embedder=emb, document_embeddings=mixed)
    with pytest.raises(NonFiniteError):
        rerank(None, CORPUS, 1, embedder=emb, query_embedding=[np.nan] * 256)
    with pytest.raises(ConfigError, match="cannot embed"):
        rerank(QUERY, CORPUS, 1, embedder=object())


def test_a_reranker_object_local_or_remote_over_grpc_gives_the_same_picks() -> None:
    pytest.importorskip("grpc", reason="the remote reranker needs grpcio ([reranker] extra)")
    from qdrant_sift.reranker import LocalReranker
    from qdrant_sift.reranker._remote import RemoteReranker
    from qdrant_sift.reranker._server import build_server

    expected = rerank(QUERY, CORPUS, 4, embedder=HashingEmbedder())
    local = rerank(QUERY, CORPUS, 4, embedder=HashingEmbedder(), reranker=LocalReranker("cpu"))
    assert local == expected
    server = build_server(port=0, device="cpu", max_workers=2).start()
    try:
        remote = RemoteReranker(f"grpc://127.0.0.1:{server.port}")
        try:
            got = rerank(QUERY, CORPUS, 4, embedder=HashingEmbedder(), reranker=remote)
        finally:
            remote.close()
    finally:
        server.stop(grace=0)
    assert [r.index for r in got] == [r.index for r in expected]
    np.testing.assert_allclose(
        [r.uncertainty for r in got], [r.uncertainty for r in expected], atol=1e-5
    )


def test_seed_and_options_reach_the_selector() -> None:
    """``seed`` makes ``random`` reproducible; ``options=`` is the keywords' one-object twin."""
    from qdrant_sift.options import RERANK_DEFAULTS, SelectOptions

    emb = HashingEmbedder()
    orders = {
        seed: [
            r.index for r in rerank(QUERY, CORPUS, 5, embedder=emb, strategy="random", seed=seed)
        ]
        for seed in range(6)
    }
    assert len(set(map(tuple, orders.values()))) > 1  # the seed is not ignored
    again = [r.index for r in rerank(QUERY, CORPUS, 5, embedder=emb, strategy="random", seed=3)]
    assert again == orders[3]
    opts = SelectOptions(strategy="random", seed=3, unique=True)
    assert [r.index for r in rerank(QUERY, CORPUS, 5, embedder=emb, options=opts)] == orders[3]
    near = SelectOptions(strategy="nearest", unique=True)
    assert [r.index for r in rerank(QUERY, CORPUS, 3, embedder=emb, options=near)] == [
        r.index for r in rerank(QUERY, CORPUS, 3, embedder=emb, strategy="nearest")
    ]
    assert RERANK_DEFAULTS.unique  # a keyword at rerank's own default is no clash
    assert rerank(QUERY, CORPUS, 2, embedder=emb, unique=True, options=near)
    with pytest.raises(ConfigError, match="lam"):
        rerank(QUERY, CORPUS, 2, embedder=emb, lam=3.0, options=near)
    with pytest.raises(ConfigError, match="SelectOptions"):
        rerank(QUERY, CORPUS, 2, embedder=emb, options={"strategy": "nearest"})  # type: ignore[arg-type]
