"""SiftClient with a kernel apart from recall: SIFT selects in the kernel's geometry (stored
kernel vectors, or the candidates' texts embedded on the fly), recall stays on the recall vector.
Real parts: Qdrant local mode and Edge, in-process SIFT, a tiny random Llama for ``model-*``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest_stores import HashEmbedder

from qdrant_sift.client import SiftClient
from qdrant_sift.client._kernel import KernelCache
from qdrant_sift.client.embed import FunctionEmbedder
from qdrant_sift.client.stores import EdgeStore, QdrantStore
from qdrant_sift.errors import ConfigError, DimensionMismatchError
from qdrant_sift.reranker import LocalReranker

PROMPT = "What does SIFT pick?"
TEXTS = [f"chunk {i}: " + " ".join(f"w{(i * 7 + j) % 53}" for j in range(12)) for i in range(40)]
META = [{"source": f"doc{i}"} for i in range(len(TEXTS))]


def _store(kind: str, tmp_path: Any, name: str = "docs") -> Any:
    return QdrantStore(name, location=":memory:") if kind == "memory" else EdgeStore(tmp_path, name)


def twin_kernel(twins: dict[str, str], seen: list[str]) -> FunctionEmbedder:
    """The recall embedding, except that each key text is embedded as its twin: identical."""
    emb = HashEmbedder()

    def fn(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return emb.embed_documents([twins.get(t, t) for t in texts])

    return FunctionEmbedder(fn, emb.dim)


def _search(client: SiftClient, n: int = 5) -> list[str]:
    return [d.text for d in client.search(PROMPT, n=n, k=40)]


@pytest.mark.parametrize("kind", ["memory", "edge"])
def test_picks_follow_the_kernel_stored_or_computed(kind: str, tmp_path: Any) -> None:
    with _store(kind, tmp_path / "plain") as plain:
        base = SiftClient(
            store=plain, embedder=HashEmbedder(), reranker=LocalReranker(device="cpu"),
            kernel="recall",
        )  # fmt: skip
        base.add_texts(TEXTS, META)
        first = _search(base)
        a, b = first[0], first[1]  # SIFT picks both on the recall kernel
        seen: list[str] = []
        kernel = twin_kernel({b: a}, seen)  # a kernel in which b says exactly what a says
        computed = SiftClient(store=plain, embedder=HashEmbedder(), kernel_embedder=kernel,
                              reranker=LocalReranker(device="cpu"))  # fmt: skip
        assert plain.kernel_dim is None
        picks = computed.search(PROMPT, n=5, k=40)
        texts = [d.text for d in picks]
        assert not {a, b} <= set(texts)  # never both: the second teaches nothing new
        # exactly SIFT on the kernel's vectors of what the recall vector recalled
        cands = plain.recall(HashEmbedder().embed_query(PROMPT), 40)
        ref = LocalReranker(device="cpu").select(
            kernel.embed_query(PROMPT),
            kernel.embed_documents([p["text"] for p in cands.payloads]),
            5,
        )
        assert [d.id for d in picks] == [cands.ids[i] for i in ref.indices]
        np.testing.assert_allclose([d.uncertainty for d in picks], ref.variances, rtol=1e-5)
    # Stored kernel vectors (written by add_texts through the same client) give the same picks.
    with _store(kind, tmp_path / "kern") as kern:
        stored = SiftClient(store=kern, embedder=HashEmbedder(), kernel_embedder=kernel,
                            reranker=LocalReranker(device="cpu"))  # fmt: skip
        stored.add_texts(TEXTS, META)
        assert kern.kernel_dim == HashEmbedder().dim
        before = len(seen)
        assert _search(stored) == texts
        assert seen[before:] == [PROMPT]  # only the prompt was embedded: the kernel is stored


def test_model_kernel_from_the_tuned_model(tmp_path: Any) -> None:
    from conftest_finetune import tiny_llama

    from qdrant_sift.finetune import ModelEmbedder, TestTimeTuner, TuneConfig

    model, tokenizer = tiny_llama(max_positions=256)
    tuner = TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=4, max_length=64))
    with QdrantStore("docs", location=":memory:") as store:
        client = SiftClient(store=store, embedder=HashEmbedder(), model=tuner, kernel="model-last",
                            reranker=LocalReranker(device="cpu"))  # fmt: skip
        client.add_texts(TEXTS[:20], META[:20])
        assert store.kernel_dim == model.config.hidden_size  # a new collection stores the kernel
        picks = client.search(PROMPT, n=4, k=20)
        emb = ModelEmbedder(tuner.model, tuner.tokenizer, pooling="last")
        cands = store.recall(HashEmbedder().embed_query(PROMPT), 20)
        ref = LocalReranker(device="cpu").select(
            emb.embed_query(PROMPT), emb.embed_documents([p["text"] for p in cands.payloads]), 4
        )
        assert [d.id for d in picks] == [cands.ids[i] for i in ref.indices]


def test_kernel_options_fail_before_any_work(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="kernel must be one of"):
        SiftClient(kernel="model-max")
    with pytest.raises(ConfigError, match="not both"):
        SiftClient(kernel="model-mean", kernel_embedder=HashEmbedder())
    with pytest.raises(ConfigError, match="Embedder protocol"):
        SiftClient(kernel_embedder=object())
    with QdrantStore("docs", location=":memory:") as store:
        SiftClient(store=store, embedder=HashEmbedder(), kernel_embedder=HashEmbedder(6)).add_texts(
            TEXTS, META
        )
        assert store.kernel_dim == 6
        wrong = SiftClient(store=store, embedder=HashEmbedder(), kernel_embedder=HashEmbedder(7))
        with pytest.raises(DimensionMismatchError, match="6-d kernel"):
            wrong.search(PROMPT, n=3, k=10)
        with pytest.raises(ConfigError, match="kernel"):  # a kernel collection needs kernels
            SiftClient(store=store, embedder=HashEmbedder(), kernel="recall").add_texts(["more"])
    with QdrantStore("docs", location=":memory:") as store:
        store.create(HashEmbedder().dim)
        store.upsert([1, 2], HashEmbedder().embed_documents(["a", "b"]), [{"text": "a"}, {}])
        client = SiftClient(store=store, embedder=HashEmbedder(), kernel_embedder=HashEmbedder(6))
        with pytest.raises(ConfigError, match="no text under payload key 'text'"):
            client.search("a", n=1, k=2)


def test_kernel_cache_embeds_each_text_once_and_evicts_oldest() -> None:
    seen: list[str] = []

    def fn(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return np.array([[len(t), 1.0] for t in texts])

    cache = KernelCache(FunctionEmbedder(fn, 2), maxsize=3)
    out = cache.vectors(["a", "bb", "a"])
    np.testing.assert_array_equal(out, [[1, 1], [2, 1], [1, 1]])
    assert seen == ["a", "bb"]  # a duplicate within a call is embedded once
    cache.vectors(["bb", "ccc", "dddd"])  # "a" is now the oldest: evicted
    assert seen == ["a", "bb", "ccc", "dddd"] and len(cache) == 3
    cache.vectors(["a"])
    assert seen[-1] == "a" and cache.vectors([]).shape == (0, 2)


def test_a_client_refuses_kernel_vectors_of_another_kernel(tmp_path: Any) -> None:
    """``stored`` and ``for_writing`` compare the collection's recorded kernel id with the
    client's (same dimension, another pooling: the case a dimension check cannot see)."""
    from qdrant_sift.client._kernel import SelectionKernel

    def kernel(kid: str | None) -> SelectionKernel:
        emb = FunctionEmbedder(lambda t: np.ones((len(t), 4)), 4, normalize=True)
        if kid is not None:
            emb.kernel_id = kid  # type: ignore[attr-defined]
        return SelectionKernel(lambda: emb)

    with EdgeStore(tmp_path, "k") as store:
        store.create(8, kernel_dim=4, kernel_id="model-last:4:abc")
        assert kernel("model-last:4:abc").stored(store)
        assert kernel(None).stored(store)  # an embedder that cannot say: not compared
        for call in ("stored", "for_writing"):
            with pytest.raises(ConfigError, match="model-last:4:abc"):
                getattr(kernel("model-mean:4:abc"), call)(store)
        assert kernel("model-last:4:abc").for_writing(store) is not None
