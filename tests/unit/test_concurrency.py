"""Shared state under threads: 8 threads hammer ``select`` / ``select_batch`` (and with them
the process-wide BLAS cap, which must be restored afterwards), ``HFEmbedder``'s lazy load,
``default_embedder`` and the service's store cache; every result must equal the single-threaded
run's."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qdrant_sift.reranker import RemoteReranker, Selection, _blas, select, select_batch
from qdrant_sift.reranker._server import serve
from qdrant_sift.reranker._sift_np import GRAM_MAX_K

THREADS = 8
RNG = np.random.default_rng(13)


def _hammer(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run ``jobs`` on 8 threads that start together; results in job order."""
    start = threading.Barrier(THREADS)

    def run(job: Callable[[], Any]) -> Any:
        return job()

    def first(job: Callable[[], Any]) -> Any:
        start.wait(30)
        return job()

    with ThreadPoolExecutor(THREADS) as pool:
        head = [pool.submit(first, job) for job in jobs[:THREADS]]
        tail = [pool.submit(run, job) for job in jobs[THREADS:]]
        return [f.result(120) for f in head + tail]


def _same(got: Selection, want: Selection) -> None:
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.variances, want.variances, rtol=1e-6, atol=1e-9)
    assert got.stopped_early == want.stopped_early


def _blas_threads() -> list[int | None]:
    return [lc.get_num_threads() for lc in _blas._blas_controllers()]


@pytest.fixture
def two_blas_threads() -> Iterator[None]:
    """BLAS on 2 threads for the test (OMP_NUM_THREADS=1 would leave nothing to cap)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _blas._blas_controllers():
        pytest.fail("threadpoolctl finds no BLAS library under numpy")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        yield


SMALL = RNG.standard_normal((200, 48)).astype(np.float32)
LARGE = RNG.standard_normal((GRAM_MAX_K + 400, 16)).astype(np.float32)  # the threaded path
QUERIES = [RNG.standard_normal(48).astype(np.float32) for _ in range(12)]
QLARGE = [RNG.standard_normal(16).astype(np.float32) for _ in range(4)]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"unique": True},
    {"lam": 0.3},
    {"alpha": 2.0},
    {"strategy": "mmr", "diversity": 0.7},
    {"strategy": "nearest"},
]


def _select_jobs() -> list[Callable[[], Selection]]:
    jobs: list[Callable[[], Selection]] = []
    for i, q in enumerate(QUERIES):
        kw = OPTIONS[i % len(OPTIONS)]
        jobs.append(lambda q=q, kw=kw: select(q, SMALL, 20, device="cpu", **kw))
    for q in QLARGE:
        jobs.append(lambda q=q: select(q, LARGE, 12, device="cpu"))
    return jobs * 2  # 32 calls, small and large interleaved across the threads


@pytest.mark.usefixtures("two_blas_threads")
def test_select_from_8_threads_equals_single_threaded() -> None:
    before = _blas_threads()
    jobs = _select_jobs()
    want = [job() for job in jobs]
    got = _hammer(jobs)
    for g, w in zip(got, want, strict=True):
        _same(g, w)
    assert not _blas.capped() and _blas_threads() == before  # the cap never outlives its users


@pytest.mark.usefixtures("two_blas_threads")
def test_select_batch_from_8_threads_equals_single_threaded() -> None:
    own = [SMALL[i : i + 120] for i in range(0, 80, 10)]
    jobs: list[Callable[[], list[Selection]]] = (
        [
            lambda: select_batch(QUERIES, SMALL, 15, device="cpu"),
            lambda: select_batch(QUERIES, SMALL[:100], 15, device="cpu"),  # one kernel table
            lambda: select_batch(QUERIES[:8], own, 10, unique=True, device="cpu"),
            lambda: select_batch(QLARGE, LARGE, 8, device="cpu"),
        ]
        * 4
    )
    want = [job() for job in jobs]
    got = _hammer(jobs)
    for gs, ws in zip(got, want, strict=True):
        for g, w in zip(gs, ws, strict=True):
            _same(g, w)
    assert not _blas.capped()


@pytest.mark.usefixtures("two_blas_threads")
def test_the_main_thread_caps_nested_and_torch_is_never_capped() -> None:
    import torch

    before, torch_threads = _blas_threads(), torch.get_num_threads()
    assert all(n == 2 for n in before)
    with _blas.single_thread_blas():
        assert _blas.capped() and all(n == 1 for n in _blas_threads())
        assert torch.get_num_threads() == torch_threads  # torch's kernels are not the capped lib
        with _blas.single_thread_blas():  # nested: still capped, not restored early
            pass
        assert _blas.capped()
    assert not _blas.capped() and _blas_threads() == before


@pytest.mark.usefixtures("two_blas_threads")
def test_other_threads_never_touch_the_setting() -> None:
    before = _blas_threads()
    seen: list[bool] = []

    def worker() -> None:
        with _blas.single_thread_blas():
            seen.append(_blas.capped())

    t = threading.Thread(target=worker)
    t.start()
    t.join(30)
    assert seen == [False] and _blas_threads() == before


@pytest.mark.usefixtures("two_blas_threads")
def test_only_the_main_thread_caps_so_the_cap_cannot_leak() -> None:
    """OpenBLAS ignores thread counts set outside the main thread: a worker that ended the last
    small block would fail to restore the setting, leaving BLAS capped for good."""
    before = _blas_threads()
    entered, leave = threading.Event(), threading.Event()

    def worker() -> None:
        with _blas.single_thread_blas():
            entered.set()
            leave.wait(30)

    t = threading.Thread(target=worker)
    with _blas.single_thread_blas():
        t.start()
        assert entered.wait(30)
    assert _blas_threads() == before  # the main thread's block ended: restored, worker or not
    leave.set()
    t.join(30)
    assert not _blas.capped() and _blas_threads() == before


# --- the embedders' lazy load --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import BertConfig, BertModel

    from qdrant_sift.client.embed import minilm_path

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(folder)
    src = minilm_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{src}/{name}", folder / name)
    return str(folder)


TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate("abcdefghijklmnop")]


def test_hf_embedder_loads_once_under_8_threads(
    tiny_bert: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import transformers

    from qdrant_sift.client.embed import HFEmbedder

    want = HFEmbedder(tiny_bert, device="cpu").embed_documents(TEXTS)
    real = transformers.AutoModel.from_pretrained
    loads: list[int] = []

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        time.sleep(0.2)  # widen the window in which an unlocked load would run twice
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", slow_load)
    emb = HFEmbedder(tiny_bert, device="cpu", batch_size=4)
    got = _hammer([lambda i=i: emb.embed_documents(TEXTS[i:] + TEXTS[:i]) for i in range(16)])
    assert len(loads) == 1
    for i, out in enumerate(got):
        np.testing.assert_allclose(out, np.roll(want, -i, axis=0), atol=1e-5)


def test_default_embedder_is_one_instance_under_8_threads() -> None:
    from qdrant_sift.client.embed import default_embedder

    default_embedder.cache_clear()
    try:
        got = _hammer([default_embedder for _ in range(32)])
        assert len({id(e) for e in got}) == 1 and got[0] is default_embedder()
        assert got[0]._model is None  # sharing it loaded nothing
    finally:
        default_embedder.cache_clear()


# --- the service's store cache and shared Edge shards --------------------------------------------


class _CountedStore:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self._closed = name, closed

    def close(self) -> None:
        self._closed.append(self.name)


def test_store_cache_evicts_stores_that_were_busy_once_their_calls_end() -> None:
    """A store in use cannot be evicted when another opens; the bound must still hold between
    calls (CI once saw 3 open of 2 after 8 threads' recalls)."""
    from qdrant_sift.reranker._store_cache import StoreCache

    closed: list[str] = []
    cache = StoreCache(2)

    def store(name: str) -> _CountedStore:
        return _CountedStore(name, closed)

    with cache.open("a", store), cache.open("b", store):
        with cache.open("c", store):
            assert cache.open_stores() == ["a", "b", "c"] and closed == []  # all three busy
        assert cache.open_stores() == ["a", "b"] and closed == ["c"]  # the only idle one goes
    with cache.open("b", store):
        pass
    with cache.open("c", store):  # a is the least recently used idle store
        assert cache.open_stores() == ["b", "c"] and closed == ["c", "a"]
    cache.close()
    assert sorted(closed) == ["a", "b", "c", "c"]


def test_recall_from_8_threads_over_a_bounded_store_cache(tmp_path: Path) -> None:
    from qdrant_sift.client.stores import EdgeStore

    d = 16
    data = {name: RNG.standard_normal((80, d)).astype(np.float32) for name in ("a", "b", "c")}
    for name, vecs in data.items():
        with EdgeStore(tmp_path, name) as store:
            store.create(d, distance="cosine")
            store.upsert(list(range(len(vecs))), vecs, [{"i": i} for i in range(len(vecs))])
    queries = [RNG.standard_normal(d).astype(np.float32) for _ in range(6)]
    calls = [(name, q) for name in ("a", "b", "c") for q in queries] * 2  # 36 calls

    handle = serve(port=0, device="cpu", edge_path=tmp_path, max_workers=8, max_open_stores=2)
    with handle, RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=60) as client:

        def recall(name: str, q: np.ndarray) -> tuple[list[Any], list[float]]:
            got = client.search(name, q, k=30, n=6, with_payload=True)
            assert got.payloads == [{"i": i} for i in got.ids]
            return got.ids, got.variances.tolist()

        want = [recall(name, q) for name, q in calls]
        got = _hammer([lambda c=c: recall(*c) for c in calls])
        assert len(handle.servicer.open_stores()) <= 2
    assert got == want
