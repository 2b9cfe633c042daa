"""SiftClient end to end on real parts: Qdrant (local mode and Edge), in-process and gRPC SIFT,
a tiny random Llama with a real LoRA adapter. Only the embedder is a deterministic hash."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from conftest_finetune import base_state, tiny_llama
from conftest_stores import HashEmbedder

from qdrant_sift.client import ProgressEvent, SiftClient
from qdrant_sift.client.stores import EdgeStore, QdrantStore
from qdrant_sift.errors import (
    ConfigError,
    EmptyCollectionError,
    InvalidInputError,
    PromptTooLongError,
    TuningError,
)
from qdrant_sift.finetune import TestTimeTuner, TuneConfig
from qdrant_sift.reranker import LocalReranker, RemoteReranker, serve

PROMPT = "What does SIFT pick?"
TEXTS = [f"chunk {i}: " + " ".join(f"w{(i * 7 + j) % 53}" for j in range(12)) for i in range(40)]


def _tuner() -> TestTimeTuner:
    model, tokenizer = tiny_llama(max_positions=256)
    return TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=4, max_length=64))


def _adapter(tuner: TestTimeTuner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tuner.model.named_parameters() if p.requires_grad}


@pytest.fixture(params=["memory", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    s = (
        QdrantStore("docs", location=":memory:")
        if request.param == "memory"
        else EdgeStore(tmp_path / "edge", "docs")
    )
    with s:
        yield s


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteReranker]:
    handle = serve(port=0, device="cpu")
    with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=30) as client:
        yield client
    handle.stop(0)


@pytest.fixture(params=["local", "remote"])
def reranker(request: pytest.FixtureRequest) -> Any:
    return (
        LocalReranker(device="cpu")
        if request.param == "local"
        else request.getfixturevalue("remote")
    )


def _client(
    store: Any, reranker: Any = None, tuner: Any = None, kernel: str | None = "recall"
) -> SiftClient:
    """On the recall kernel unless told otherwise (the default kernel is the model's own)."""
    client = SiftClient(
        store=store,
        reranker=reranker or LocalReranker(device="cpu"),
        embedder=HashEmbedder(),
        model=tuner,
        kernel=kernel,
    )
    client.add_texts(TEXTS, [{"source": f"doc{i}"} for i in range(len(TEXTS))])
    return client


def test_search_congruent_across_stores_and_rerankers(store: Any, reranker: Any) -> None:
    client = _client(store, reranker)
    docs = client.search(PROMPT, n=8, k=30)
    assert len(docs) == 8
    assert [d.rank for d in docs] == list(range(8))
    unc = [d.uncertainty for d in docs]
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(unc))
    assert all(d.text in TEXTS and d.metadata["source"].startswith("doc") for d in docs)
    # The same selection as calling SIFT directly on what the store recalls.
    query = HashEmbedder().embed_query(PROMPT)
    cands = store.recall(query, 30)
    expected = LocalReranker(device="cpu").select(query, cands.vectors, 8)
    assert [d.id for d in docs] == [cands.ids[i] for i in expected.indices]
    np.testing.assert_allclose(unc, expected.variances, rtol=1e-5, atol=1e-6)


def test_sift_skips_copies_that_nearest_wastes_picks_on() -> None:
    emb = HashEmbedder()
    query = emb.embed_query(PROMPT)
    best = max(TEXTS, key=lambda t: abs(float(emb.embed_query(t) @ query)))
    with QdrantStore("docs", location=":memory:") as store:
        client = _client(store)
        client.add_texts([best] * 4, [{"source": f"copy{i}"} for i in range(4)])
        nearest = client.search(PROMPT, n=5, k=44, strategy="nearest")
        sift = client.search(PROMPT, n=5, k=44, strategy="sift")
    assert sum(d.text == best for d in nearest) == 5
    assert sum(d.text == best for d in sift) <= 2
    assert sift[-1].uncertainty < nearest[-1].uncertainty  # less left to learn after SIFT's picks


def test_adapt_and_generate_tunes_once_per_pick_and_resets(store: Any) -> None:
    tuner = _tuner()
    before_adapter, before_base = _adapter(tuner), base_state(tuner.model)
    events: list[ProgressEvent] = []
    client = _client(store, tuner=tuner)
    result = client.adapt_and_generate(PROMPT, n=5, k=20, max_new_tokens=8, progress=events.append)
    assert result.steps == 5 and len(result.documents) == 5 and len(result.losses) == 5
    assert not result.base_model_only and result.reason is None
    assert result.uncertainty_after < result.uncertainty_before
    assert result.uncertainty_after == pytest.approx(result.documents[-1].uncertainty)
    assert result.timings.tune > 0 and result.timings.generate > 0
    assert result.timings.total >= result.timings.tune + result.timings.generate
    stages = [e.stage for e in events]
    assert stages.index("embed") < stages.index("recall") < stages.index("select")
    assert stages.index("select") < stages.index("tune") < stages.index("generate")
    assert [e.step for e in events if e.stage == "tune"] == [0, 1, 2, 3, 4, 5]
    for name, value in _adapter(tuner).items():
        assert torch.equal(value, before_adapter[name]), name
    for name, value in base_state(tuner.model).items():
        assert torch.equal(value, before_base[name]), name


def test_no_picks_answers_with_the_base_model() -> None:
    with QdrantStore("docs", location=":memory:") as store:
        client = _client(store, tuner=_tuner())
        base = client.generate(PROMPT, max_new_tokens=8)
        zero = client.adapt_and_generate(PROMPT, n=0, max_new_tokens=8)
        assert zero.text == base and zero.steps == 0 and zero.base_model_only
        assert "n=0" in (zero.reason or "")
        stopped = client.adapt_and_generate(PROMPT, n=5, alpha=1e6, max_new_tokens=8)
        assert stopped.text == base and stopped.steps == 0 and stopped.stopped_early
        assert "adaptive" in (stopped.reason or "")


def test_failure_mid_tune_resets_the_adapter() -> None:
    tuner = _tuner()
    before = _adapter(tuner)

    def boom(event: ProgressEvent) -> None:
        if event.stage == "tune" and event.step == 2:
            raise RuntimeError("injected")

    with QdrantStore("docs", location=":memory:") as store:
        client = _client(store, tuner=tuner)
        with pytest.raises(TuningError):
            client.adapt_and_generate(PROMPT, n=4, k=20, max_new_tokens=4, progress=boom)
    for name, value in _adapter(tuner).items():
        assert torch.equal(value, before[name]), name
    assert tuner.base_unchanged()


class _CountingReranker(LocalReranker):
    calls = 0

    def select(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().select(*args, **kwargs)


def test_bad_calls_fail_before_any_work() -> None:
    counting = _CountingReranker(device="cpu")
    with QdrantStore("docs", location=":memory:") as store:
        client = _client(store, counting, tuner=_tuner())
        with pytest.raises(PromptTooLongError):
            client.adapt_and_generate("x" * 400, n=2, max_new_tokens=8)
        with pytest.raises(InvalidInputError):
            client.adapt_and_generate("   ", n=2)
        with pytest.raises(ConfigError):
            client.search(PROMPT, n=-1)
        assert counting.calls == 0


def test_missing_or_empty_collection_says_what_to_do(tmp_path: Any) -> None:
    with QdrantStore("nothing", location=":memory:") as store:
        client = SiftClient(store=store, embedder=HashEmbedder(), collection="nothing")
        with pytest.raises(EmptyCollectionError, match="add texts first"):
            client.search(PROMPT)
        store.create(HashEmbedder().dim)
        with pytest.raises(EmptyCollectionError):
            client.search(PROMPT)


def test_environment_selects_remote_reranker(
    monkeypatch: pytest.MonkeyPatch, remote: RemoteReranker
) -> None:
    monkeypatch.setenv("QDRANT_SIFT_RERANKER", remote.target)
    with QdrantStore("docs", location=":memory:") as store:
        client = SiftClient(store=store, embedder=HashEmbedder(), kernel="recall")
        assert isinstance(client.reranker, RemoteReranker)
        client.add_texts(TEXTS[:10])
        assert len(client.search(PROMPT, n=3, k=10)) == 3
        client.close()


def test_one_direction_recalls_only_similar_chunks() -> None:
    with QdrantStore("docs", location=":memory:") as store:
        client = _client(store)
        both = client.search(PROMPT, n=40, k=40, strategy="nearest")
        one = client.search(PROMPT, n=20, k=20, strategy="nearest", both_directions=False)
    assert all(d.score > 0 for d in one)
    assert any(d.score < 0 for d in both)  # |cosine| recall brings anti-correlated chunks too


def test_search_reads_payloads_of_the_picks_only(store: Any) -> None:
    """With the recall kernel no candidate text is needed to select: recall reads no payloads,
    and one retrieve reads the picks'; a pick deleted in between is left out, ranks stay dense."""
    client = _client(store)
    calls: list[tuple[str, Any]] = []
    recall, retrieve = store.recall, store.retrieve

    def spy_recall(*args: Any, **kw: Any) -> Any:
        calls.append(("recall", kw.get("with_payload", True)))
        return recall(*args, **kw)

    def spy_retrieve(ids: Any, with_vectors: bool = True) -> Any:
        calls.append(("retrieve", len(ids)))
        return retrieve(ids, with_vectors=with_vectors)[1:]  # the first pick "was deleted"

    store.recall, store.retrieve = spy_recall, spy_retrieve
    docs = client.search(PROMPT, n=8, k=30, unique=True)
    assert calls == [("recall", False), ("retrieve", 8)]
    assert len(docs) == 7 and [d.rank for d in docs] == list(range(7))
    assert all(d.text in TEXTS and d.metadata["source"].startswith("doc") for d in docs)
