"""deploy/create_collection.py: the collection-init job, on qdrant-client's local mode.

The job must create exactly what ``QdrantStore.create`` creates (so recall reads the layout it
expects), be idempotent, refuse a collection of another dimension, and fail fast with exit 1
when Qdrant cannot be reached. Sharding itself only shows on a real cluster (tests/docker).
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from qdrant_sift.client.stores import QdrantStore
from qdrant_sift.errors import ConfigError, DimensionMismatchError, StoreUnavailableError

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    path = REPO / "deploy" / "create_collection.py"
    spec = importlib.util.spec_from_file_location("deploy_create_collection", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cc = _load()


def test_creates_once_then_leaves_it(tmp_path: Path) -> None:
    with QdrantStore("docs", path=tmp_path / "q") as store:
        kw = {"dim": 8, "shard_number": 6, "replication_factor": 2}
        assert cc.ensure_collection(store, **kw) is True
        assert cc.ensure_collection(store, **kw) is False
        assert store.dim == 8
        assert store.distance == "cosine"
        # The layout is the store's own: what it writes, it recalls.
        rng = np.random.default_rng(0)
        vecs = rng.normal(size=(5, 8)).astype(np.float32)
        store.upsert([1, 2, 3, 4, 5], vecs, [{"text": str(i)} for i in range(5)])
        got = store.recall(vecs[2], k=1, both_directions=False)
        assert list(got.ids) == [3]


def test_other_dimension_is_refused(tmp_path: Path) -> None:
    with QdrantStore("docs", path=tmp_path / "q") as store:
        cc.ensure_collection(store, dim=8)
        with pytest.raises(DimensionMismatchError):
            cc.ensure_collection(store, dim=16)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"shard_number": 0}, "shard_number"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"replication_factor": 1, "write_consistency_factor": 2}, "cannot exceed"),
    ],
)
def test_bad_cluster_parameters(tmp_path: Path, kw: dict[str, int], msg: str) -> None:
    with QdrantStore("docs", path=tmp_path / "q") as store:
        with pytest.raises(ConfigError, match=msg):
            cc.ensure_collection(store, dim=8, **kw)
        assert not store.exists()


def test_main_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    assert cc.main([]) == 2
    assert cc.main(["--url", ":memory:", "--dim", "4", "--shard-number", "3"]) == 0
    assert "created: dim=4 shards=3" in capsys.readouterr().out
    bad = ["--url", ":memory:", "--replication-factor", "1", "--write-consistency-factor", "2"]
    assert cc.main(bad) == 2


def test_unreachable_qdrant_fails_after_waiting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port (the socket is closed again): exit 1, not a traceback.
    assert cc.main(["--url", f"http://127.0.0.1:{port}", "--wait", "0"]) == 1


def test_wait_for_store_retries_until_deadline() -> None:
    class Flaky:
        """Stands in for a Qdrant that is still starting: fails `failures` times."""

        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.calls = 0

        def exists(self) -> bool:
            self.calls += 1
            if self.calls <= self.failures:
                raise StoreUnavailableError("starting")
            return False

    sleeps: list[float] = []
    store = Flaky(3)
    assert cc.wait_for_store(store, 60.0, sleep=sleeps.append) is False
    assert store.calls == 4
    assert sleeps == [1.0, 1.0, 1.0]
    with pytest.raises(StoreUnavailableError):
        cc.wait_for_store(Flaky(10), 0.0, sleep=sleeps.append)
