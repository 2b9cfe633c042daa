"""Both-direction recall reads vectors only for the ids it keeps from −q (issue 15)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qdrant_sift.client.stores import EdgeStore, QdrantStore, VectorStore
from qdrant_sift.client.stores._hits import (
    OPPOSITE_PROBE,
    Hits,
    merge_directions,
    opposite_probe_settles,
)
from qdrant_sift.errors import ConfigError


def _hits(ids: list[int], scores: list[float], full: bool = True) -> Hits:
    rows = np.array([[float(i)] * 2 for i in ids], np.float32).reshape(len(ids), 2)
    if not full:
        return Hits(ids, np.array(scores, np.float32), None, [])
    return Hits(ids, np.array(scores, np.float32), rows, [{"i": i} for i in ids], rows * 10)


def test_ids_only_neg_matches_the_full_merge_and_fetches_only_kept_ids() -> None:
    pos, neg = _hits([1, 2, 3], [0.9, 0.5, 0.1]), _hits([4, 2, 5, 6], [0.8, 0.3, 0.2, 0.05])
    asked: list[list[Any]] = []

    def fetch(ids: list[Any]) -> Hits:
        asked.append(ids)
        full = _hits(ids, [0.0] * len(ids))
        return Hits(full.ids, full.scores, full.vectors, full.payloads, full.kernel_vectors)

    want = merge_directions(pos, neg, 4)
    got = merge_directions(pos, _hits(neg.ids, list(neg.scores), full=False), 4, fetch)
    assert asked == [[4, 5]]  # 6 is not kept, 2 comes from q's own rows
    assert got.ids == want.ids == [1, 4, 2, 5]
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.vectors, want.vectors)
    np.testing.assert_array_equal(got.kernel_vectors, want.kernel_vectors)
    assert got.payloads == want.payloads


def test_nothing_kept_from_neg_fetches_nothing() -> None:
    def fetch(ids: list[Any]) -> Hits:
        raise AssertionError("no fetch")

    got = merge_directions(_hits([1, 2], [0.9, 0.8]), _hits([3], [0.1], full=False), 2, fetch)
    assert got.ids == [1, 2] and got.vectors.shape == (2, 2)


def test_an_id_deleted_before_the_fetch_is_left_out() -> None:
    got = merge_directions(
        _hits([1, 2], [0.9, 0.1]), _hits([3, 4], [0.8, 0.5], full=False), 3,
        lambda ids: _hits([i for i in ids if i != 3], [0.0] * (len(ids) - 1)),
    )  # fmt: skip
    assert got.ids == [1, 4] and got.vectors[:, 0].tolist() == [1.0, 4.0]


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_both_directions_reads_rows_once(tmp_path: Any, backend: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    store: Any = (
        EdgeStore(tmp_path, "d") if backend == "edge" else QdrantStore("d", location=":memory:")
    )
    with store:
        store.create(8)
        store.upsert(list(range(300)), x, [{"i": i} for i in range(300)])
        fetched: list[int] = []
        real = store._fetch

        def spy(ids: list[Any], kernel: bool, with_payload: bool = True) -> Hits:
            fetched.append(len(ids))
            return real(ids, kernel, with_payload)

        store._fetch = spy
        q = x[0] * 0.1 + 0.01 * rng.standard_normal(8).astype(np.float32)
        cand = store.recall(q, 40)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = xn @ (q / np.linalg.norm(q))
        order = np.argsort(-np.abs(s), kind="stable")[:40]
        assert cand.ids == order.tolist()
        np.testing.assert_allclose(cand.vectors, xn[order], atol=1e-5)
        assert [p["i"] for p in cand.payloads] == order.tolist()
        assert sum(fetched) == int((s[order] < 0).sum())  # only rows kept from −q were read


def test_vector_cache_rows_are_the_engines_and_follow_writes(tmp_path: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    with EdgeStore(tmp_path, "d") as store:
        store.create(8)
        store.upsert(list(range(500)), x, [{"i": i} for i in range(500)])
    with EdgeStore(tmp_path, "d", vector_cache=True) as store:
        q = x[3]
        cand = store.recall(q, 60)  # builds the cache from the shard
        assert store._vcache is not None and len(store._vcache) == 500
        engine = store._engine_fetch(cand.ids, False)
        assert engine.ids == cand.ids
        np.testing.assert_array_equal(cand.vectors, engine.vectors)  # bit for bit
        assert cand.payloads == engine.payloads
        # a replaced vector, a deleted point and a new one are seen by the next recall
        store.upsert([3, 900], np.stack([-x[3], x[3]]), [{"i": -3}, {"i": 900}])
        store.delete([cand.ids[1]])
        again = store.recall(q, 60, both_directions=False)
        assert again.ids[0] == 900 and cand.ids[1] not in again.ids
        np.testing.assert_array_equal(again.vectors, store._engine_fetch(again.ids, False).vectors)
        both = store.recall(q, 60)
        assert both.ids[:2] in ([900, 3], [3, 900]) and both.payloads[both.ids.index(3)] == {
            "i": -3
        }
        assert len(store._vcache) == 500


def test_vector_cache_with_kernel_vectors(tmp_path: Any) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    kv = rng.standard_normal((50, 4)).astype(np.float32)
    with EdgeStore(tmp_path, "k", vector_cache=True) as store:
        store.create(8, kernel_dim=4)
        store.upsert(list(range(50)), x, kernel_vectors=kv)
        cand = store.recall(x[0], 20, with_kernel=True)
        want = kv[cand.ids] / np.linalg.norm(kv[cand.ids], axis=1, keepdims=True)
        np.testing.assert_allclose(cand.kernel_vectors, want, atol=1e-6)
        store.upsert([0], x[:1], kernel_vectors=-kv[:1])  # cache built: read back on write
        again = store.recall(x[0], 20, with_kernel=True)
        got = again.kernel_vectors[again.ids.index(0)]
        np.testing.assert_allclose(got, -want[cand.ids.index(0)], atol=1e-6)


def _reference_merge(pos: Hits, neg: Hits, k: int) -> list[Any]:
    """The definition: K largest |score| over q's and −q's hits, stable, first occurrence."""
    ids = pos.ids + neg.ids
    scores = np.concatenate([pos.scores, -neg.scores])
    out: list[Any] = []
    for j in np.argsort(-np.abs(scores), kind="stable"):
        if ids[j] not in out:
            out.append(ids[j])
    return out[:k]


@pytest.mark.parametrize("seed", range(40))
def test_merge_shortcut_equals_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_pos, n_neg, k = (int(v) for v in rng.integers(1, 12, 3))
    shift = rng.choice([0.0, 0.5, -0.3])  # all positive, mixed, or crossing zero
    sp = np.sort(rng.choice([0.9, 0.5, 0.2], n_pos) + shift + 0.01 * rng.integers(0, 3, n_pos))
    sn = np.sort(rng.choice([0.6, 0.3, 0.1], n_neg) + 0.01 * rng.integers(0, 3, n_neg))
    ids = [int(v) for v in rng.permutation(40)]
    pos = _hits(ids[:n_pos], list(sp[::-1]))
    neg_ids = ids[n_pos - 2 : n_pos - 2 + n_neg] if n_pos > 2 else ids[20 : 20 + n_neg]
    neg = _hits(neg_ids, list(sn[::-1]))
    got = merge_directions(pos, neg, k)
    assert got.ids == _reference_merge(pos, neg, k)
    assert got.vectors[:, 0].tolist() == [float(i) for i in got.ids]


def test_opposite_probe_settles_when_its_last_hit_cannot_enter() -> None:
    pos = _hits([1, 2, 3], [0.9, 0.6, 0.5])
    assert opposite_probe_settles(pos, _hits([7, 8], [0.7, 0.4], full=False), 3, 2)  # 0.4 < 0.5
    assert not opposite_probe_settles(pos, _hits([7, 8], [0.7, 0.5], full=False), 3, 2)  # tie
    assert opposite_probe_settles(pos, _hits([7], [0.95], full=False), 3, 2)  # no more −q hits
    assert not opposite_probe_settles(_hits([1], [0.9]), _hits([7, 8], [0.2, 0.1]), 3, 2)
    # the least |score| of q's hits counts, also when q's own hits score below zero
    assert opposite_probe_settles(_hits([1, 2], [0.1, -0.3]), _hits([7, 8], [0.2, 0.09]), 2, 2)


def _anti_data(n_anti: int) -> tuple[np.ndarray, np.ndarray]:
    """Points around q (cosine ~0.7-0.95), ``n_anti`` around −q (~−0.95), the rest orthogonal."""
    rng = np.random.default_rng(7)
    q = np.zeros(16, np.float32)
    q[0] = 1.0
    near = rng.standard_normal((120, 16)).astype(np.float32) * 0.25
    near[:, 0] = 1.0
    anti = rng.standard_normal((n_anti, 16)).astype(np.float32) * 0.1
    anti[:, 0] = -1.0
    ortho = rng.standard_normal((150, 16)).astype(np.float32)
    ortho[:, 0] = 0.05 * rng.standard_normal(150)
    return np.concatenate([near, anti, ortho]), q


@pytest.mark.parametrize("backend", ["edge", "local"])
@pytest.mark.parametrize(("n_anti", "searches"), [(5, 1), (40, 2)])
def test_both_directions_probe_then_full_opposite_search(
    tmp_path: Any, backend: str, n_anti: int, searches: int
) -> None:
    """A few strong −q hits: the probe of −q holds them all (one engine call); more than the
    probe: the full −q search runs too. Either way: the exact K largest |score| (issue 15)."""
    x, q = _anti_data(n_anti)
    store: Any = (
        EdgeStore(tmp_path, "d") if backend == "edge" else QdrantStore("d", location=":memory:")
    )
    with store:
        store.create(16)
        store.upsert(list(range(len(x))), x, [{"i": i} for i in range(len(x))])
        calls: list[list[int]] = []
        real = store._search

        def spy(
            queries: Any, k: int, flt: Any, params: Any, kern: bool, vectors: Any = None,
            limits: Any = None, with_payload: bool = True,
        ) -> Any:  # fmt: skip
            calls.append(list(limits or [k] * len(queries)))
            return real(queries, k, flt, params, kern, vectors, limits, with_payload)

        store._search = spy
        k = 60
        cand = store.recall(q, k)
        s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ q
        want = np.argsort(-np.abs(s), kind="stable")[:k]
        assert set(cand.ids) == set(want.tolist())
        assert sum(1 for i in cand.ids if s[i] < 0) == min(n_anti, k)
        assert len(calls) == searches and calls[0] == [k, OPPOSITE_PROBE]
        if searches == 2:
            assert calls[1] == [k]


def test_a_backend_without_kernel_fetch_raises_config_error() -> None:
    """The base class's fallback ``_fetch`` cannot read kernel vectors: a typed ConfigError
    (was NotImplementedError) when a both-directions recall with kernels needs −q rows."""

    class NoKernelFetch(QdrantStore):
        _fetch = VectorStore._fetch  # the base fallback, as a third-party backend gets it

    x, q = _anti_data(5)
    kv = np.abs(x[:, :4]) + 0.1
    store = NoKernelFetch("d", location=":memory:")
    with store:
        store.create(16, kernel_dim=4)
        store.upsert(list(range(len(x))), x, kernel_vectors=kv)
        with pytest.raises(ConfigError, match="both_directions=False"):
            store.recall(q, 60, with_kernel=True)
        one = store.recall(q, 60, with_kernel=True, both_directions=False)
        assert one.kernel_vectors is not None and len(one) == 60
        rows = store._fetch([0, 1], False)  # recall vectors: the fallback reads them
        assert rows.ids == [0, 1] and rows.vectors is not None
        assert rows.vectors.shape == (2, 16)


@pytest.mark.parametrize("backend", ["edge", "edge-cache", "local"])
@pytest.mark.parametrize("n_anti", [5, 40])
def test_recall_without_payloads_is_the_same_recall(
    tmp_path: Any, backend: str, n_anti: int
) -> None:
    """``with_payload=False``: the same ids, scores and vectors, no payloads read; the picks'
    payloads then come from ``retrieve(ids, with_vectors=False)``."""
    x, q = _anti_data(n_anti)
    store: Any = (
        QdrantStore("d", location=":memory:")
        if backend == "local"
        else EdgeStore(tmp_path, "d", vector_cache=backend == "edge-cache")
    )
    with store:
        store.create(16)
        store.upsert(list(range(len(x))), x, [{"i": i} for i in range(len(x))])
        full = store.recall(q, 60)
        bare = store.recall(q, 60, with_payload=False)
        assert bare.ids == full.ids and bare.payloads == []
        # local mode returns a row in the last float bit differently from one call to the next
        np.testing.assert_allclose(bare.scores, full.scores, atol=1e-6)
        np.testing.assert_allclose(bare.vectors, full.vectors, atol=1e-6)
        one = store.recall(q, 60, both_directions=False, with_payload=False)
        assert one.payloads == [] and one.ids == store.recall(q, 60, both_directions=False).ids
        picks = [bare.ids[i] for i in (3, 0, 3)]
        got = store.retrieve(picks, with_vectors=False)
        assert [p.payload for p in got] == [{"i": picks[0]}, {"i": picks[1]}]
