"""Both-direction recall reads vectors only for the ids it keeps from −q (issue 15)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qdrant_sift.client.stores import EdgeStore, QdrantStore
from qdrant_sift.client.stores._base import Hits, merge_directions


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

        def spy(ids: list[Any], kernel: bool) -> Hits:
            fetched.append(len(ids))
            return real(ids, kernel)

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
