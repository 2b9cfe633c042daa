"""In-process and remote selection are interchangeable: the same tests run on ``LocalReranker``
and ``RemoteReranker`` (real server on loopback) and must give identical picks, float32-close
variances and the same error classes. Plus the client's own behaviour: retries, typed errors,
and the one-hop Recall RPC against a real Qdrant (qdrant-client local mode)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from qdrant_sift import errors
from qdrant_sift.errors import ConfigError
from qdrant_sift.options import SelectOptions
from qdrant_sift.reranker import LocalReranker, RemoteReranker, Selection, select
from qdrant_sift.reranker._server import serve

RNG = np.random.default_rng(11)
D = 24
X = RNG.standard_normal((60, D)).astype(np.float32)
Q1 = RNG.standard_normal(D).astype(np.float32)
QM = RNG.standard_normal((3, D)).astype(np.float32)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with serve(port=0, device="cpu", max_workers=4) as handle:
        yield handle


@pytest.fixture(scope="module")
def remote(server: Any) -> Iterator[RemoteReranker]:
    with RemoteReranker(f"grpc://127.0.0.1:{server.port}", timeout=30) as client:
        yield client


@pytest.fixture(params=["local", "remote"])
def reranker(request: pytest.FixtureRequest, remote: RemoteReranker) -> Any:
    return LocalReranker(device="cpu") if request.param == "local" else remote


def _same(got: Selection, want: Selection) -> None:
    assert isinstance(got, Selection)
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.variances, want.variances, rtol=2e-6, atol=1e-7)
    assert got.prior_variance == pytest.approx(want.prior_variance, rel=2e-6, abs=1e-7)
    assert got.stopped_early == want.stopped_early
    assert got.strategy == want.strategy


# --- congruence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "n", "kwargs"),
    [
        (Q1, 10, {}),
        (QM, 12, {}),
        (Q1, 90, {}),  # n > K: repeats
        (Q1, 20, {"unique": True}),
        (QM, 15, {"lam": 0.3}),
        (Q1, 30, {"alpha": 2.0}),  # adaptive stopping
        (Q1, 8, {"normalize": False}),
        (Q1, 8, {"strategy": "nearest"}),
        (QM, 8, {"strategy": "mmr", "diversity": 0.7}),
        (Q1, 8, {"strategy": "random", "seed": 5}),
    ],
    ids=["one", "multi", "repeats", "unique", "lam", "alpha", "raw", "nearest", "mmr", "random"],
)
def test_select_congruent(reranker: Any, query: np.ndarray, n: int, kwargs: dict) -> None:
    _same(reranker.select(query, X, n, **kwargs), select(query, X, n, device="cpu", **kwargs))


def test_options_object_selects_like_the_keywords(reranker: Any) -> None:
    """``options=SelectOptions(...)`` is the keywords in one object, local and remote alike;
    both at once is refused with the same class."""
    opts = SelectOptions(strategy="mmr", diversity=0.7, alpha=2.0)
    want = select(QM, X, 8, device="cpu", strategy="mmr", diversity=0.7, alpha=2.0)
    _same(reranker.select(QM, X, 8, options=opts), want)
    _same(reranker.select_batch([QM], X, 8, options=opts)[0], want)
    with pytest.raises(ConfigError, match="lam"):
        reranker.select(QM, X, 8, options=opts, lam=0.5)
    with pytest.raises(ConfigError):
        reranker.select(QM, X, 8, options={"strategy": "mmr"})


def test_alpha_actually_stops(reranker: Any) -> None:
    got = reranker.select(Q1, X, 30, alpha=2.0)
    assert got.stopped_early and len(got) < 30


def test_inputs_of_any_kind(reranker: Any) -> None:
    want = select(Q1, X, 6, device="cpu")
    _same(reranker.select(Q1.astype(np.float64), X.astype(np.float64), 6), want)
    _same(reranker.select(torch.from_numpy(Q1), torch.from_numpy(X), 6), want)
    _same(reranker.select(Q1.tolist(), X.tolist(), 6), want)


def test_select_batch_congruent(reranker: Any) -> None:
    queries = [Q1, QM, -Q1]
    want = select_batch_ref = [select(q, X, 7, device="cpu") for q in queries]
    for got, ref in zip(reranker.select_batch(queries, X, 7), select_batch_ref, strict=True):
        _same(got, ref)
    own = [X[:30], X[10:], X[::2]]
    want = [select(q, c, 5, device="cpu", unique=True) for q, c in zip(queries, own, strict=True)]
    got = reranker.select_batch(queries, own, 5, unique=True)
    for g, w in zip(got, want, strict=True):
        _same(g, w)
    rows = np.stack([Q1, -Q1])  # a 2-D array is B single-target prompts
    for g, w in zip(
        reranker.select_batch(rows, X, 4), [select(r, X, 4) for r in rows], strict=True
    ):
        _same(g, w)
    assert reranker.select_batch([], X, 3) == []


def test_select_batch_reads_candidate_layouts_alike(reranker: Any) -> None:
    """Shared candidates as nested lists (K = B here, the ambiguous case) or per-prompt lists
    of arrays / nested lists mean the same to the in-process and the remote reranker."""
    queries = [Q1, -Q1, QM]
    shared = X[:3].tolist()  # one shared (3, d) set given as lists, with 3 prompts
    want = [select(q, X[:3], 2, device="cpu") for q in queries]
    for g, w in zip(reranker.select_batch(queries, shared, 2), want, strict=True):
        _same(g, w)
    own = [X[:20].tolist(), X[20:40], torch.from_numpy(X[40:60])]
    want = [select(q, X[i * 20 : (i + 1) * 20], 3, device="cpu") for i, q in enumerate(queries)]
    for g, w in zip(reranker.select_batch(queries, own, 3), want, strict=True):
        _same(g, w)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.select(np.full(D, np.nan), X, 3), errors.NonFiniteError),
        (lambda r: r.select(Q1, np.where(X > 2.5, np.inf, X), 3), errors.NonFiniteError),
        (lambda r: r.select(Q1[:5], X, 3), errors.DimensionMismatchError),
        (lambda r: r.select(Q1, X, 3, strategy="bogus"), errors.ConfigError),
        (lambda r: r.select(Q1, X, 3, lam=-1.0), errors.ConfigError),
        (lambda r: r.select_batch([Q1, Q1], [X], 3), errors.InvalidInputError),
    ],
    ids=["nan-query", "inf-candidates", "dims", "strategy", "lam", "batch-count"],
)
def test_errors_congruent(reranker: Any, call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call(reranker)


def test_n_zero_is_refused_remotely(remote: RemoteReranker) -> None:
    """In-process n=0 is an empty selection; the service contract makes it INVALID_ARGUMENT."""
    assert len(select(Q1, X, 0, device="cpu")) == 0
    with pytest.raises(errors.InvalidInputError, match="n must be >= 1"):
        remote.select(Q1, X, 0)


# --- client behaviour ----------------------------------------------------------------------------


def test_bad_targets() -> None:
    for target in ("http://x:1", "grpc://", "nohostport", ""):
        with pytest.raises(errors.ConfigError):
            RemoteReranker(target)


def test_unreachable_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RemoteReranker(f"grpc://127.0.0.1:{port}", retries=2, backoff=0.01, timeout=2)
    with client, pytest.raises(errors.RerankerUnavailableError, match="3 attempt"):
        client.select(Q1, X, 3)
    with pytest.raises(errors.RerankerError, match="closed"):
        client.select(Q1, X, 3)


def test_retries_until_the_server_comes_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started: dict[str, Any] = {}

    def late_start() -> None:
        time.sleep(0.4)
        started["handle"] = serve(port=port, device="cpu")

    thread = threading.Thread(target=late_start)
    thread.start()
    try:
        with RemoteReranker(f"127.0.0.1:{port}", retries=8, backoff=0.1, timeout=5) as client:
            _same(client.select(Q1, X, 5), select(Q1, X, 5, device="cpu"))
    finally:
        thread.join()
        started["handle"].stop(0)


def test_deadline_exceeded_is_typed(remote: RemoteReranker) -> None:
    big = RNG.standard_normal((20_000, 256)).astype(np.float32)
    with pytest.raises(errors.SelectionCancelledError) as info:
        remote.select(big[0], big, 200, timeout=0.001)
    assert info.value.reason == "deadline"


# --- Recall: one hop over a real Qdrant ----------------------------------------------------------


@pytest.fixture(scope="module")
def recall_server() -> Iterator[tuple[Any, Any, list[Any]]]:
    from qdrant_client import QdrantClient

    from qdrant_sift.client.stores import QdrantStore

    qc = QdrantClient(location=":memory:")
    store = QdrantStore("docs", client=qc)
    store.create(D, distance="cosine")
    ids: list[Any] = [i if i % 2 else str(uuid.UUID(int=i + 1)) for i in range(len(X))]
    payloads = [{"group": i % 3, "name": f"p{i}", "tags": ["a", "b"]} for i in range(len(X))]
    store.upsert(ids, X, payloads)
    with serve(port=0, device="cpu", store_factory=lambda c: QdrantStore(c, client=qc)) as h:
        yield h, store, ids


def test_recall_matches_store_plus_select(recall_server: tuple[Any, Any, list[Any]]) -> None:
    handle, store, _ = recall_server
    with RemoteReranker(f"grpc://127.0.0.1:{handle.port}") as client:
        got = client.search("docs", Q1, k=30, n=8, with_payload=True)
        cands = store.recall(Q1, 30)
        want = select(Q1, cands.vectors, 8, device="cpu")
        assert got.ids == [cands.ids[i] for i in want.indices]
        assert {type(i) for i in got.ids} <= {int, str} and got.recalled == 30
        np.testing.assert_allclose(got.variances, want.variances, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(got.scores, cands.scores[want.indices], rtol=1e-6)
        assert got.payloads == [cands.payloads[i] for i in want.indices]
        assert isinstance(got.payloads[0]["group"], int)

        with pytest.warns(DeprecationWarning, match="RemoteReranker.search"):
            old = client.recall("docs", Q1, k=30, n=8, with_payload=True)  # the old name
        assert old.ids == got.ids

        one_way = client.search("docs", QM, k=10, n=3, both_directions=False, unique=True)
        assert (
            (one_way.scores > 0).all() and len(set(one_way.ids)) == 3 and one_way.payloads is None
        )


def test_recall_filter_and_errors(recall_server: tuple[Any, Any, list[Any]]) -> None:
    from qdrant_sift.client.stores import Filter, Match, Range

    handle, _, _ = recall_server
    with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", retries=0) as client:
        got = client.search("docs", Q1, k=50, n=5, filter={"group": 1}, with_payload=True)
        assert got.recalled == 20 and all(p["group"] == 1 for p in got.payloads or [])
        flt = Filter(must=(Range("group", gte=1),), must_not=(Match("name", ["p1", "p4"]),))
        got = client.search("docs", Q1, k=60, n=60, filter=flt, unique=True, with_payload=True)
        names = {p["name"] for p in got.payloads or []}
        assert got.recalled == 38 and len(got) == 38 and not names & {"p1", "p4"}
        nothing = client.search("docs", Q1, k=5, n=3, filter={"name": "none"})
        assert nothing.recalled == 0 and len(nothing) == 0
        with pytest.raises(errors.CollectionNotFoundError):  # as the store raises it in-process
            client.search("missing", Q1, k=5, n=3)
        with pytest.raises(errors.DimensionMismatchError):
            client.search("docs", Q1[:4], k=5, n=3)
        with pytest.raises(errors.InvalidInputError):
            client.search("docs", Q1, k=0, n=3)


def test_recall_over_embedded_edge(tmp_path: Any) -> None:
    from qdrant_sift.client.stores import EdgeStore

    with EdgeStore(tmp_path, "docs") as store:
        store.create(D, distance="cosine")
        store.upsert(list(range(len(X))), X, [{"i": i} for i in range(len(X))])
        cands = store.recall(Q1, 25)
    want = select(Q1, cands.vectors, 6, device="cpu")
    handle = serve(port=0, device="cpu", edge_path=tmp_path)
    with handle, RemoteReranker(f"grpc://127.0.0.1:{handle.port}") as client:
        got = client.search("docs", Q1, k=25, n=6, with_payload=True)
    assert got.ids == [cands.ids[i] for i in want.indices]
    assert got.payloads == [{"i": i} for i in got.ids]
