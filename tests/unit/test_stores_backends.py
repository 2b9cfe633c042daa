"""Backend-specific behaviour: locking, HNSW after optimize, server errors, named vectors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest_stores import DIM, brute_force, make_points

from qdrant_sift.client.stores import EdgeStore, QdrantStore, open_store
from qdrant_sift.errors import ConfigError, StoreLockedError, StoreUnavailableError

_HOLD = textwrap.dedent(
    """
    import sys, time
    from qdrant_sift.client.stores import {cls}
    store = {ctor}
    print("ready", flush=True)
    sys.stdin.readline()
    store.close()
    """
)


def _hold_in_subprocess(cls: str, ctor: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(cls=cls, ctor=ctor)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_edge_second_process_gets_store_locked(tmp_path) -> None:
    with EdgeStore(tmp_path, "docs") as store:
        store.create(DIM)
        store.upsert([1], np.ones((1, DIM)), [{}])
    child = _hold_in_subprocess("EdgeStore", f"EdgeStore({str(tmp_path)!r}, 'docs')")
    try:
        with pytest.raises(StoreLockedError, match="another process"):
            EdgeStore(tmp_path, "docs")
    finally:
        child.communicate("\n", timeout=30)
    with EdgeStore(tmp_path, "docs") as store:  # released when the other process closes
        assert store.count() == 1


def test_edge_other_collection_in_same_folder_is_independent(tmp_path) -> None:
    with EdgeStore(tmp_path, "a") as a, EdgeStore(tmp_path, "b") as b:
        a.create(DIM)
        b.create(DIM * 2)
        assert (a.dim, b.dim) == (DIM, DIM * 2)


def test_qdrant_local_folder_second_process_gets_store_locked(tmp_path) -> None:
    QdrantStore("c", path=tmp_path).close()
    child = _hold_in_subprocess("QdrantStore", f"QdrantStore('c', path={str(tmp_path)!r})")
    try:
        with pytest.raises(StoreLockedError):
            QdrantStore("c", path=tmp_path)
    finally:
        child.communicate("\n", timeout=30)


def test_edge_hnsw_after_optimize_and_exact_on_request(tmp_path) -> None:
    """Tiny indexing threshold so a few thousand points get a real HNSW graph."""
    import qdrant_edge as qe

    ids, vecs, payloads = make_points(n=3000, dim=DIM, seed=1)
    with EdgeStore(tmp_path) as store:
        store.create(DIM, optimizers=qe.EdgeOptimizersConfig(indexing_threshold=10))
        store.upsert(ids, vecs, payloads)
        assert not store.indexed
        assert store.optimize() is True
        assert store.indexed
        q = np.random.default_rng(5).standard_normal(DIM)
        ref, _ = brute_force(vecs, q, 50, True)
        approx = store.recall(q, 50)
        exact = store.recall(q, 50, exact=True)
        assert exact.ids == [ids[i] for i in ref]
        overlap = len(set(approx.ids) & set(exact.ids)) / 50
        assert overlap >= 0.9  # hnsw_ef defaults to 2·k
    with EdgeStore(tmp_path) as store:  # the index survives reopening
        assert store.indexed and store.count() == 3000


def test_unknown_search_param_is_config_error(tmp_path) -> None:
    with EdgeStore(tmp_path) as store:
        store.create(DIM)
        store.upsert([1], np.ones((1, DIM)), [{}])
        with pytest.raises(ConfigError):
            store.recall(np.ones(DIM), 1, ef=3)


def test_unreachable_server_is_store_unavailable(monkeypatch) -> None:
    """A real refused connection on a closed loopback port, REST and gRPC."""
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    for grpc in (False, True):
        store = QdrantStore("c", url="http://127.0.0.1:9", prefer_grpc=grpc, timeout=2)
        with pytest.raises(StoreUnavailableError, match="docker compose"):
            store.exists()
        store.close()


def test_url_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:9")
    store = QdrantStore("c", timeout=2)
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:9"):
        store.count()
    monkeypatch.delenv("QDRANT_URL")
    with pytest.raises(ConfigError, match="QDRANT_URL"):
        QdrantStore("c")


def test_named_vector_and_caller_client() -> None:
    """Only the named field is asked for; a caller's client is not closed by the store."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(location=":memory:")
    client.create_collection(
        "multi",
        vectors_config={
            "text": models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            "image": models.VectorParams(size=3, distance=models.Distance.DOT),
        },
    )
    ids, vecs, _ = make_points(n=40)
    client.upsert(
        "multi",
        points=[
            models.PointStruct(id=i, vector={"text": v.tolist(), "image": [1.0, 0, 0]})
            for i, v in zip(ids, vecs, strict=True)
        ],
    )
    with QdrantStore("multi", client=client, vector_name="text") as store:
        assert store.dim == DIM
        cand = store.recall(vecs[0], 5)
        assert cand.ids[0] == ids[0] and cand.vectors.shape == (5, DIM)
        store.upsert([999], vecs[:1], [{"new": True}])
    with pytest.raises(ConfigError, match="vector_name"):
        _ = QdrantStore("multi", client=client).dim
    assert client.count("multi").count == 41  # still open


def test_collection_params_pass_through_and_cluster_params_ignored_on_edge(tmp_path) -> None:
    with QdrantStore("c", location=":memory:") as store:
        store.create(DIM, shard_number=2, replication_factor=2, on_disk_payload=True)
        assert store.exists()
        with pytest.raises(ConfigError):
            QdrantStore("d", location=":memory:").create(DIM, no_such_param=1)
    with EdgeStore(tmp_path) as store:
        store.create(DIM, shard_number=2, replication_factor=2)
        assert store.exists()


def test_open_store_factory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QDRANT_SIFT_HOME", str(tmp_path / "home"))
    with open_store("edge", "x") as store:
        assert isinstance(store, EdgeStore) and store.root == tmp_path / "home" / "edge"
    with open_store("qdrant", "x", path=tmp_path / "q") as store:
        assert isinstance(store, QdrantStore)
    with pytest.raises(ConfigError):
        open_store("faiss")
    with pytest.raises(ConfigError):
        open_store("edge", url="http://x")


def test_distance_checks(tmp_path) -> None:
    with EdgeStore(tmp_path) as store:
        with pytest.raises(ConfigError):
            store.create(DIM, distance="hamming")
        store.create(DIM, distance="euclid")
        ids, vecs, payloads = make_points(n=20)
        store.upsert(ids, vecs, payloads)
        with pytest.raises(ConfigError, match="both_directions=False"):
            store.recall(vecs[0], 3)
        assert store.recall(vecs[0], 3, both_directions=False).ids[0] == ids[0]
