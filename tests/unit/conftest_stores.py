"""Shared pieces of the store/ingest tests: a deterministic embedder, data, and the congruence
suite that every backend (Qdrant local mode, Qdrant Edge, a Qdrant server) must pass unchanged.

A test module subclasses :class:`StoreContract` and provides a ``store_factory`` fixture.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest_stores_kernel import KernelContract

from qdrant_sift.client.ingest import ingest
from qdrant_sift.client.stores import Filter, Match, Range, VectorStore
from qdrant_sift.errors import (
    CollectionNotFoundError,
    ConfigError,
    DimensionMismatchError,
    EmptyCollectionError,
    InvalidInputError,
    NonFiniteError,
)

HERE = Path(__file__).resolve().parent
DIM = 16


class HashEmbedder:
    """Deterministic pseudo-embeddings from a text hash: same text, same vector, any process."""

    def __init__(self, dim: int = DIM, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.calls = 0

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


def make_points(n: int = 300, dim: int = DIM, seed: int = 0) -> tuple[list[Any], np.ndarray, list]:
    """Ids mixing ints and UUIDs, Gaussian vectors, payloads with a keyword and a number."""
    import uuid

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    ids: list[Any] = [i if i % 2 == 0 else str(uuid.UUID(int=i + 1)) for i in range(n)]
    payloads = [
        {"i": i, "tag": ("red", "green", "blue")[i % 3], "x": float(i) / n} for i in range(n)
    ]
    return ids, vecs, payloads


def brute_force(vecs: np.ndarray, q: np.ndarray, k: int, both: bool, mask=None) -> np.ndarray:
    """Indices of the exact top-k cosine neighbours (by |cos| when ``both``)."""
    xn = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = xn @ (q / np.linalg.norm(q))
    key = np.abs(scores) if both else scores
    if mask is not None:
        key = np.where(mask, key, -np.inf)
    order = np.argsort(-key, kind="stable")
    if mask is not None:
        order = order[mask[order]]
    return order[:k], scores


def write_corpus(folder: Path, n_files: int = 12, words: int = 120, seed: int = 0) -> Path:
    """Small text files of random words (deterministic) under ``folder``."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(500)]
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        sub = folder / ("a" if f % 2 else "b")
        sub.mkdir(exist_ok=True)
        text = " ".join(rng.choice(vocab, size=words))
        (sub / f"doc{f:03d}.txt").write_text(f"file {f}. {text}\n", encoding="utf-8")
    return folder


@dataclass
class StoreFactory:
    """Opens (and reopens) a store of one backend; ``spec`` lets a subprocess open it too."""

    kind: str
    open: Callable[..., VectorStore]
    persistent: bool
    spec: dict[str, Any] = field(default_factory=dict)


def open_from_spec(spec: dict[str, Any], collection: str) -> VectorStore:
    from qdrant_sift.client.stores import EdgeStore, QdrantStore

    if spec["kind"] == "edge":
        return EdgeStore(spec["path"], collection)
    if "url" in spec:
        return QdrantStore(collection, url=spec["url"], api_key=spec.get("api_key"))
    return QdrantStore(collection, path=spec["path"])


_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    from pathlib import Path
    from conftest_stores import HashEmbedder, open_from_spec
    from qdrant_sift.client.ingest import ingest
    spec = json.loads({spec!r})
    marker = Path({marker!r})
    def progress(report):
        marker.write_text(str(report.upserted))
    with open_from_spec(spec, {collection!r}) as store:
        ingest([{corpus!r}], store, HashEmbedder({dim}, delay=0.05), tokenizer="regex",
               chunk_tokens=20, overlap=4, batch_size=6, progress=progress)
    marker.write_text("done")
    """
)


class StoreContract(KernelContract):
    """The congruence suite: identical expectations for every backend (kernel vectors too)."""

    @pytest.fixture
    def filled(self, store_factory: StoreFactory):
        ids, vecs, payloads = make_points()
        store = store_factory.open()
        store.create(DIM)
        store.upsert(ids, vecs, payloads)
        yield store, ids, vecs, payloads
        store.close()

    # --- recall ------------------------------------------------------------------------------

    @pytest.mark.parametrize("both", [False, True])
    @pytest.mark.parametrize("k", [1, 17, 60])
    def test_recall_equals_brute_force(self, filled, both: bool, k: int) -> None:
        store, ids, vecs, _ = filled
        rng = np.random.default_rng(k + 100 * both)
        for _ in range(3):
            q = rng.standard_normal(DIM).astype(np.float32)
            cand = store.recall(q, k, both_directions=both)
            ref, scores = brute_force(vecs, q, k, both)
            assert cand.ids == [ids[i] for i in ref]  # recall@K = 1.0 and the same order
            np.testing.assert_allclose(cand.scores, scores[ref], atol=1e-5)
            xn = vecs[ref] / np.linalg.norm(vecs[ref], axis=1, keepdims=True)
            np.testing.assert_allclose(cand.vectors, xn, atol=1e-5)
            assert cand.vectors.dtype == np.float32 and cand.scores.dtype == np.float32
            assert [p["i"] for p in cand.payloads] == list(ref)
            assert len(cand) == k

    def test_both_directions_finds_anticorrelated(self, filled) -> None:
        store, ids, vecs, _ = filled
        q = -vecs[7]  # point 7 is the most anti-correlated point there is
        assert ids[7] not in store.recall(q, 5, both_directions=False).ids
        cand = store.recall(q, 5, both_directions=True)
        assert cand.ids[0] == ids[7] and cand.scores[0] == pytest.approx(-1.0, abs=1e-5)
        assert len(set(cand.ids)) == len(cand.ids)

    def test_k_larger_than_collection_has_no_duplicates(self, store_factory) -> None:
        ids, vecs, payloads = make_points(n=10)
        with store_factory.open() as store:
            store.create(DIM)
            store.upsert(ids, vecs, payloads)
            cand = store.recall(vecs[0], 50, both_directions=True)
            assert sorted(map(str, cand.ids)) == sorted(map(str, ids))

    def test_multi_vector_query_recalls_by_mean(self, filled) -> None:
        store, _, vecs, _ = filled
        prompt = np.stack([vecs[1], vecs[2], vecs[3]])
        a = store.recall(prompt, 20)
        b = store.recall(prompt.mean(axis=0), 20)
        assert a.ids == b.ids

    def test_bad_queries(self, filled) -> None:
        store, *_ = filled
        with pytest.raises(DimensionMismatchError):
            store.recall(np.ones(DIM + 1), 5)
        with pytest.raises(NonFiniteError):
            store.recall(np.full(DIM, np.nan), 5)
        with pytest.raises(InvalidInputError):
            store.recall(np.ones(DIM), 0)
        with pytest.raises(InvalidInputError):
            store.recall(np.zeros(DIM), 5)

    # --- filters -----------------------------------------------------------------------------

    def _check_filter(self, store, vecs, payloads, flt, pred, both=True) -> None:
        mask = np.array([pred(p) for p in payloads])
        q = np.random.default_rng(3).standard_normal(DIM)
        cand = store.recall(q, 25, both_directions=both, filter=flt)
        ref, _ = brute_force(vecs, q, 25, both, mask)
        assert [p["i"] for p in cand.payloads] == list(ref)
        assert all(pred(p) for p in cand.payloads)

    def test_filters_ours_and_dict(self, filled) -> None:
        store, _, vecs, payloads = filled
        self._check_filter(store, vecs, payloads, Filter(must=(Match("tag", "red"),)),
                           lambda p: p["tag"] == "red")  # fmt: skip
        self._check_filter(store, vecs, payloads, {"tag": ["red", "blue"], "x": {"gte": 0.5}},
                           lambda p: p["tag"] in ("red", "blue") and p["x"] >= 0.5)  # fmt: skip
        self._check_filter(store, vecs, payloads, Range("i", gt=10, lte=100),
                           lambda p: 10 < p["i"] <= 100, both=False)  # fmt: skip
        flt = Filter(should=(Match("tag", "green"), Range("i", lt=30)), must_not=(Match("i", 3),))
        self._check_filter(
            store,
            vecs,
            payloads,
            flt,
            lambda p: (p["tag"] == "green" or p["i"] < 30) and p["i"] != 3,
        )

    def test_native_filter_passes_through(self, filled) -> None:
        store, _, vecs, payloads = filled
        from qdrant_sift.client.stores import EdgeStore

        if isinstance(store, EdgeStore):
            import qdrant_edge as qe

            native = qe.Filter(must=[qe.FieldCondition(key="tag", match=qe.MatchValue("blue"))])
        else:
            from qdrant_client import models

            native = models.Filter(
                must=[models.FieldCondition(key="tag", match=models.MatchValue(value="blue"))]
            )
        self._check_filter(store, vecs, payloads, native, lambda p: p["tag"] == "blue")

    def test_foreign_filters_and_unknown_search_params_are_typed_errors(self, filled) -> None:
        store, *_ = filled
        with pytest.raises(InvalidInputError, match="takes our Filter, a dict or"):
            store.recall(np.ones(DIM), 5, filter=42)
        with pytest.raises(ConfigError, match=r"unknown search parameters \['ef_search'\]"):
            store.recall(np.ones(DIM), 5, ef_search=64)
        assert len(store.recall(np.ones(DIM), 5, hnsw_ef=64, exact=False)) == 5

    def test_filter_excluding_everything_gives_empty_candidates(self, filled) -> None:
        store, *_ = filled
        cand = store.recall(np.ones(DIM), 10, filter={"tag": "purple"})
        assert len(cand) == 0 and cand.vectors.shape == (0, DIM)

    # --- points ------------------------------------------------------------------------------

    def test_retrieve_count_scroll_delete(self, filled) -> None:
        store, ids, vecs, _ = filled
        assert store.count() == len(ids) and store.dim == DIM and store.distance == "cosine"
        got = store.retrieve([ids[5], ids[2], "00000000-0000-0000-0000-00000000ffff"])
        assert [p.id for p in got] == [ids[5], ids[2]]
        xn = vecs[5] / np.linalg.norm(vecs[5])
        np.testing.assert_allclose(got[0].vector, xn, atol=1e-5)
        assert got[0].payload["i"] == 5
        assert store.retrieve([ids[1]], with_vectors=False)[0].vector is None
        assert sorted(map(str, (p.id for p in store.scroll(batch_size=64)))) == sorted(
            map(str, ids)
        )
        store.delete([ids[0], ids[1], ids[2]])
        assert store.count() == len(ids) - 3
        assert store.retrieve([ids[0], ids[1]]) == []
        assert ids[0] not in store.recall(vecs[0], 10).ids

    def test_upsert_replaces_and_validates_before_writing(self, filled) -> None:
        store, ids, vecs, _ = filled
        store.upsert([ids[4]], vecs[9:10], [{"i": 999}])
        assert store.count() == len(ids)
        assert store.retrieve([ids[4]])[0].payload == {"i": 999}
        with pytest.raises(DimensionMismatchError):
            store.upsert([10_001, 10_002], np.ones((2, DIM + 3)), [{}, {}])
        with pytest.raises(InvalidInputError):
            store.upsert(["not-a-uuid"], np.ones((1, DIM)), [{}])
        with pytest.raises(InvalidInputError):
            store.upsert([10_003, 10_004], np.ones((1, DIM)), [{}])
        with pytest.raises(NonFiniteError):
            store.upsert([10_005], np.full((1, DIM), np.inf), [{}])
        assert store.count() == len(ids)

    def test_create_existing_other_dim_is_an_error(self, filled) -> None:
        store, *_ = filled
        assert store.create(DIM, exist_ok=True) is False
        with pytest.raises(DimensionMismatchError):
            store.create(DIM * 2, exist_ok=True)

    def test_empty_and_missing_collection(self, store_factory) -> None:
        with store_factory.open() as store:
            assert not store.exists()
            with pytest.raises(CollectionNotFoundError):
                store.recall(np.ones(DIM), 3)
            with pytest.raises(CollectionNotFoundError):
                store.count()
            store.create(DIM)
            assert store.exists() and store.count() == 0
            with pytest.raises(EmptyCollectionError):
                store.recall(np.ones(DIM), 3)
            store.upsert([1], np.ones((1, DIM)), [{}])
            store.drop()
            assert not store.exists()
            store.drop()  # dropping a missing collection is fine
            store.create(DIM * 2)
            assert store.dim == DIM * 2 and store.count() == 0

    def test_persistence_across_reopen(self, store_factory) -> None:
        if not store_factory.persistent:
            pytest.skip(f"{store_factory.kind} keeps nothing after close")
        ids, vecs, payloads = make_points(n=50)
        with store_factory.open() as store:
            store.create(DIM)
            store.upsert(ids, vecs, payloads)
            before = store.recall(vecs[3], 10)
        with store_factory.open() as store:
            assert store.count() == 50 and store.dim == DIM
            after = store.recall(vecs[3], 10)
        assert after.ids == before.ids
        np.testing.assert_allclose(after.vectors, before.vectors, atol=1e-6)

    # --- ingest ------------------------------------------------------------------------------

    def test_ingest_is_idempotent(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "corpus")
        emb = HashEmbedder()
        with store_factory.open() as store:
            kw = dict(tokenizer="regex", chunk_tokens=30, overlap=5, batch_size=8, progress=False)
            first = ingest(corpus, store, emb, **kw)
            n = store.count()
            calls = emb.calls
            second = ingest(corpus, store, emb, **kw)
            assert first.upserted == n == first.chunks > 12
            assert second.upserted == 0 and second.skipped_existing == n
            assert store.count() == n and emb.calls == calls  # nothing re-embedded
            hit = store.recall(emb.embed_query(store.retrieve(
                [next(iter(store.scroll())).id])[0].payload["text"]), 1)  # fmt: skip
            assert hit.scores[0] == pytest.approx(1.0, abs=1e-5)
            assert {"text", "source", "chunk_index"} <= set(hit.payloads[0])

    def test_ingest_wrong_dimension_writes_nothing(self, store_factory, tmp_path) -> None:
        corpus = write_corpus(tmp_path / "corpus", n_files=2)
        with store_factory.open() as store:
            store.create(DIM)
            with pytest.raises(DimensionMismatchError):
                ingest(corpus, store, HashEmbedder(DIM // 2), tokenizer="regex", progress=False)
            liar = HashEmbedder(DIM)  # claims the right size, produces the wrong one
            liar.embed_documents = lambda texts: np.ones((len(texts), DIM // 2), np.float32)
            with pytest.raises(DimensionMismatchError):
                ingest(corpus, store, liar, tokenizer="regex", chunk_tokens=20, overlap=4,
                       progress=False)  # fmt: skip
            assert store.count() == 0

    def test_resume_after_killed_ingest(self, store_factory, tmp_path) -> None:
        if not store_factory.persistent:
            pytest.skip(f"{store_factory.kind} cannot be shared with a subprocess")
        import json

        corpus = write_corpus(tmp_path / "corpus", n_files=30, words=100)
        marker = tmp_path / "marker"
        spec = store_factory.spec
        code = _CHILD.format(
            here=str(HERE), spec=json.dumps(spec), marker=str(marker),
            collection=spec["collection"], corpus=str(corpus), dim=DIM,
        )  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            done = marker.read_text() if marker.exists() else ""
            if done.isdigit() and int(done) >= 18:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL, "child finished before it was killed"
        kw = dict(tokenizer="regex", chunk_tokens=20, overlap=4, batch_size=6, progress=False)
        with store_factory.open() as store:
            partial = store.count()
            report = ingest(corpus, store, HashEmbedder(), **kw)
            resumed = sorted(map(str, (p.id for p in store.scroll())))
        assert 0 < partial < report.chunks
        assert report.skipped_existing == partial and report.upserted == report.chunks - partial
        with store_factory.open(collection="clean") as clean:
            ingest(corpus, clean, HashEmbedder(), **kw)
            expected = sorted(map(str, (p.id for p in clean.scroll())))
        assert resumed == expected  # no duplicates, no loss, identical ids
