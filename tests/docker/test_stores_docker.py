"""The store congruence suite against a real Qdrant server (deploy/docker-compose.yml, service
``qdrant``), over REST and gRPC, plus what only a server has: API keys and cluster parameters.

Skipped, with the reason, where no Docker engine runs (tests/docker/conftest.py decides).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from conftest_stores import DIM, StoreContract, StoreFactory, make_points

from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import StoreUnavailableError


@pytest.fixture(params=["rest", "grpc"])
def store_factory(request, qdrant_url: str, qdrant_api_key: str, qdrant_grpc_port: int):
    from qdrant_client import QdrantClient

    prefix = f"t{uuid.uuid4().hex[:10]}"
    grpc = request.param == "grpc"
    opened: list[str] = []
    clients: list[QdrantClient] = []

    def open_(collection: str = "c") -> QdrantStore:
        name = f"{prefix}-{collection}"
        opened.append(name)
        if not grpc:
            return QdrantStore(name, url=qdrant_url, api_key=qdrant_api_key)
        client = QdrantClient(
            url=qdrant_url, api_key=qdrant_api_key, prefer_grpc=True, grpc_port=qdrant_grpc_port,
            https=False, check_compatibility=False,
        )  # fmt: skip
        clients.append(client)
        return QdrantStore(name, client=client)

    spec = {"kind": "qdrant", "url": qdrant_url, "api_key": qdrant_api_key,
            "collection": f"{prefix}-c"}  # fmt: skip
    yield StoreFactory(request.param, open_, True, spec)
    admin = QdrantClient(url=qdrant_url, api_key=qdrant_api_key, check_compatibility=False)
    for name in set(opened):
        admin.delete_collection(name)
    admin.close()
    for c in clients:
        c.close()


class TestCongruenceServer(StoreContract):
    pass


def test_wrong_api_key_is_reported(qdrant_url: str) -> None:
    store = QdrantStore("c", url=qdrant_url, api_key="wrong-key")
    with pytest.raises(StoreUnavailableError, match="QDRANT_API_KEY"):
        store.exists()


def test_cluster_parameters_reach_the_server(qdrant_url: str, qdrant_api_key: str) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    with QdrantStore(name, url=qdrant_url, api_key=qdrant_api_key) as store:
        store.create(DIM, shard_number=2, replication_factor=1)
        ids, vecs, payloads = make_points(n=200)
        store.upsert(ids, vecs, payloads)
        info = store._client.get_collection(name)
        assert info.config.params.shard_number == 2
        assert store.recall(vecs[0], 5).ids[0] == ids[0]
        assert store.count() == 200
        np.testing.assert_allclose(np.linalg.norm(store.recall(vecs[1], 3).vectors, axis=1), 1)
        store.drop()
