"""The kernel-vector part of the store congruence suite: a collection holding SIFT's kernel as
a second named vector behaves the same on every backend (round trip, alignment of kernel rows
with recalled points after the both-directions merge, the same typed errors).

:class:`StoreContract` (conftest_stores) inherits it, so every backend runs it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qdrant_sift.client.embed import FunctionEmbedder
from qdrant_sift.client.ingest import ingest
from qdrant_sift.client.stores import KERNEL_VECTOR, RECALL_VECTOR
from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
    NonFiniteError,
)

RDIM, KDIM = 16, 6


def kernel_points(n: int = 120, seed: int = 1) -> tuple[list[Any], np.ndarray, np.ndarray, list]:
    """Ids mixing ints and UUIDs; recall and kernel vectors drawn independently."""
    import uuid

    rng = np.random.default_rng(seed)
    ids: list[Any] = [i if i % 2 == 0 else str(uuid.UUID(int=i + 7)) for i in range(n)]
    vecs = rng.standard_normal((n, RDIM)).astype(np.float32)
    kern = rng.standard_normal((n, KDIM)).astype(np.float32)
    return ids, vecs, kern, [{"i": i} for i in range(n)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def stored_layout(store: Any) -> dict[str, int]:
    """{vector name: size} as the backend itself recorded the collection."""
    from qdrant_sift.client.stores import EdgeStore

    if isinstance(store, EdgeStore):
        cfg = json.loads((Path(store.shard_dir) / "edge_config.json").read_text())
        return {name: int(v["size"]) for name, v in cfg["vectors"].items()}
    vectors = store._client.get_collection(store.collection).config.params.vectors
    if not isinstance(vectors, dict):
        return {"": int(vectors.size)}
    return {name: int(v.size) for name, v in vectors.items()}


class KernelContract:
    """Kernel vectors: identical expectations for every backend."""

    @pytest.fixture
    def kernel_filled(self, store_factory):
        ids, vecs, kern, payloads = kernel_points()
        store = store_factory.open(collection="kern")
        store.create(RDIM, kernel_dim=KDIM)
        store.upsert(ids, vecs, payloads, kernel_vectors=kern)
        yield store, ids, vecs, kern
        store.close()

    def test_kernel_layout_and_round_trip(self, kernel_filled, store_factory) -> None:
        store, ids, vecs, kern = kernel_filled
        assert stored_layout(store) == {RECALL_VECTOR: RDIM, KERNEL_VECTOR: KDIM}
        assert (store.dim, store.kernel_dim, store.distance) == (RDIM, KDIM, "cosine")
        rng = np.random.default_rng(5)
        for both in (False, True):
            q = rng.standard_normal(RDIM).astype(np.float32)
            plain = store.recall(q, 20, both_directions=both)
            cand = store.recall(q, 20, both_directions=both, with_kernel=True)
            assert plain.kernel_vectors is None and cand.ids == plain.ids  # recall unchanged
            # recall ran on the recall vector: the same order as brute force over it
            scores = unit(vecs) @ unit(q)
            order = np.argsort(-(np.abs(scores) if both else scores), kind="stable")[:20]
            assert cand.ids == [ids[i] for i in order]
            rows = [p["i"] for p in cand.payloads]
            np.testing.assert_allclose(cand.vectors, unit(vecs[rows]), atol=1e-5)
            assert cand.kernel_vectors is not None and cand.kernel_vectors.dtype == np.float32
            np.testing.assert_allclose(cand.kernel_vectors, unit(kern[rows]), atol=1e-5)
        # retrieve and scroll return the recall vector, as on a plain collection
        got = store.retrieve([ids[3]])[0]
        np.testing.assert_allclose(got.vector, unit(vecs[3]), atol=1e-5)
        assert next(iter(store.scroll(with_vectors=True))).vector.shape == (RDIM,)
        if store_factory.persistent:
            before = store.recall(vecs[3], 10, with_kernel=True)
            store.close()
            with store_factory.open(collection="kern") as again:
                assert again.kernel_dim == KDIM
                after = again.recall(vecs[3], 10, with_kernel=True)
            assert after.ids == before.ids
            np.testing.assert_allclose(after.kernel_vectors, before.kernel_vectors, atol=1e-6)

    def test_kernel_rows_stay_aligned_through_both_directions(self, kernel_filled) -> None:
        store, ids, vecs, kern = kernel_filled
        # −vecs[7]: point 7 comes from the −q search, its neighbours from both lists
        cand = store.recall(-vecs[7], 30, both_directions=True, with_kernel=True)
        assert cand.ids[0] == ids[7] and cand.scores[0] == pytest.approx(-1.0, abs=1e-5)
        assert (cand.scores > 0).any() and (cand.scores < 0).any()  # both lists contributed
        by_id = {pid: unit(kern[i]) for i, pid in enumerate(ids)}
        np.testing.assert_allclose(
            cand.kernel_vectors, np.stack([by_id[i] for i in cand.ids]), atol=1e-5
        )
        # k larger than the collection: every point once, each with its own kernel row
        allc = store.recall(vecs[0], 500, with_kernel=True)
        assert len(allc) == len(ids) == len(set(allc.ids))
        np.testing.assert_allclose(
            allc.kernel_vectors, np.stack([by_id[i] for i in allc.ids]), atol=1e-5
        )
        none = store.recall(vecs[0], 5, with_kernel=True, filter={"i": -1})
        assert len(none) == 0 and none.kernel_vectors.shape == (0, KDIM)

    def test_kernel_errors_are_typed_and_write_nothing(self, kernel_filled, store_factory) -> None:
        store, _, vecs, kern = kernel_filled
        n = store.count()
        new = [900_001, 900_002]
        bad = [
            (ConfigError, {}),  # a kernel collection needs kernel vectors
            (DimensionMismatchError, {"kernel_vectors": np.ones((2, KDIM + 1))}),
            (NonFiniteError, {"kernel_vectors": np.full((2, KDIM), np.nan)}),
            (InvalidInputError, {"kernel_vectors": np.ones((1, KDIM))}),
            (InvalidInputError, {"kernel_vectors": np.zeros((2, KDIM))}),
            (InvalidInputError, {"kernel_vectors": np.ones((2, 0))}),
        ]
        for error, kwargs in bad:
            with pytest.raises(error):
                store.upsert(new, vecs[:2], [{}, {}], **kwargs)
        assert store.count() == n
        with pytest.raises(ConfigError, match="kernel"):
            store.create(RDIM, exist_ok=True)  # exists with a kernel: asked for none
        with pytest.raises(DimensionMismatchError):
            store.create(RDIM, exist_ok=True, kernel_dim=KDIM + 2)
        assert store.create(RDIM, exist_ok=True, kernel_dim=KDIM) is False
        with pytest.raises(InvalidInputError):
            store.create(RDIM, kernel_dim=0)
        store.close()  # local mode: one client per folder
        with store_factory.open(collection="plain") as plain:
            plain.create(RDIM)
            assert plain.kernel_dim is None and stored_layout(plain) == {"": RDIM}
            with pytest.raises(ConfigError, match="no kernel vectors"):
                plain.upsert(new, vecs[:2], [{}, {}], kernel_vectors=kern[:2])
            assert plain.count() == 0
            plain.upsert(new, vecs[:2], [{}, {}])
            with pytest.raises(ConfigError, match="--kernel"):  # names the fix
                plain.recall(vecs[0], 3, with_kernel=True)
            with pytest.raises(ConfigError, match="no kernel vectors"):
                plain.create(RDIM, exist_ok=True, kernel_dim=KDIM)

    def test_kernel_id_is_recorded_kept_and_enforced(self, store_factory, tmp_path) -> None:
        from conftest_stores import HashEmbedder, write_corpus

        with store_factory.open(collection="kid") as store:
            with pytest.raises(ConfigError, match="pass kernel_dim"):
                store.create(RDIM, kernel_id="k1")
            with pytest.raises(InvalidInputError, match="kernel_id"):
                store.create(RDIM, kernel_dim=KDIM, kernel_id=7)  # type: ignore[arg-type]
            assert not store.exists()
            store.create(RDIM, kernel_dim=KDIM, kernel_id="model-mean:6:abc")
            assert store.kernel_id == "model-mean:6:abc"
            for same in ("model-mean:6:abc", None):  # the same kernel, or one that cannot say
                assert store.create(RDIM, exist_ok=True, kernel_dim=KDIM, kernel_id=same) is False
            with pytest.raises(ConfigError, match="model-last:6:abc"):
                store.create(RDIM, exist_ok=True, kernel_dim=KDIM, kernel_id="model-last:6:abc")
        if store_factory.persistent:
            with store_factory.open(collection="kid") as again:
                assert again.kernel_id == "model-mean:6:abc"
        with store_factory.open(collection="kidplain") as plain:
            plain.create(RDIM)
            assert plain.kernel_id is None
        # ingest records its kernel embedder's id, and refuses another kernel's vectors
        corpus = write_corpus(tmp_path / "kidcorpus", n_files=2)
        kw: dict[str, Any] = dict(tokenizer="regex", chunk_tokens=25, overlap=4, progress=False)

        def kernel(kid: str) -> Any:
            emb = FunctionEmbedder(lambda t: np.ones((len(t), KDIM)), KDIM, normalize=True)
            emb.kernel_id = kid  # type: ignore[attr-defined]
            return emb

        with store_factory.open(collection="kidingest") as store:
            ingest(corpus, store, HashEmbedder(RDIM), kernel_embedder=kernel("fn:a"), **kw)
            assert store.kernel_id == "fn:a"
            with pytest.raises(ConfigError, match="made by 'fn:a'"):
                ingest(corpus, store, HashEmbedder(RDIM), kernel_embedder=kernel("fn:b"), **kw)

    def test_ingest_stores_kernel_vectors(self, store_factory, tmp_path) -> None:
        from conftest_stores import HashEmbedder, write_corpus

        corpus = write_corpus(tmp_path / "kcorpus", n_files=4)
        calls: list[int] = []

        def letters(texts: list[str]) -> np.ndarray:  # a fast, deterministic kernel
            calls.append(len(texts))
            return np.array([[t.count(c) + 1.0 for c in "w0123"] for t in texts])

        kernel = FunctionEmbedder(letters, 5, normalize=True)
        kw: dict[str, Any] = dict(tokenizer="regex", chunk_tokens=25, overlap=4, progress=False)
        with store_factory.open(collection="kingest") as store:
            report = ingest(corpus, store, HashEmbedder(RDIM), kernel_embedder=kernel, **kw)
            assert store.kernel_dim == 5 and store.count() == report.upserted > 4
            cand = store.recall(np.ones(RDIM), 100, with_kernel=True)
            texts = [p["text"] for p in cand.payloads]
            np.testing.assert_allclose(cand.kernel_vectors, unit(letters(texts)), atol=1e-5)
            again = ingest(corpus, store, HashEmbedder(RDIM), kernel_embedder=kernel, **kw)
            assert again.upserted == 0  # resumable as before: nothing re-embedded
            with pytest.raises(ConfigError, match="kernel"):
                ingest(corpus, store, HashEmbedder(RDIM), **kw)
        with store_factory.open(collection="kplain") as plain:
            ingest(corpus, plain, HashEmbedder(RDIM), **kw)
            with pytest.raises(ConfigError, match="no kernel vectors"):
                ingest(corpus, plain, HashEmbedder(RDIM), kernel_embedder=kernel, **kw)
