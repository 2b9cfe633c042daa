"""The congruence suite on every backend that runs here: qdrant-client local mode in memory and
on disk, and embedded Qdrant Edge (with and without its vector cache). tests/docker runs it
against a real Qdrant server."""

from __future__ import annotations

import pytest
from conftest_stores import StoreContract, StoreFactory

from qdrant_sift.client.stores import EdgeStore, QdrantStore


@pytest.fixture(params=["memory", "local", "edge", "edge-cache"])
def store_factory(request, tmp_path) -> StoreFactory:
    kind = request.param
    if kind == "memory":
        return StoreFactory(
            kind, lambda collection="c": QdrantStore(collection, location=":memory:"), False
        )
    if kind == "local":
        path = str(tmp_path / "local")
        return StoreFactory(kind, lambda collection="c": QdrantStore(collection, path=path), True,
                            {"kind": "qdrant", "path": path, "collection": "c"})  # fmt: skip
    path = str(tmp_path / "edge")
    cache = kind == "edge-cache"  # recall gathers vectors from the in-memory copy
    return StoreFactory(kind, lambda collection="c": EdgeStore(path, collection,
                                                               vector_cache=cache), True,
                        {"kind": "edge", "path": path, "collection": "c"})  # fmt: skip


class TestCongruence(StoreContract):
    pass
