"""EdgeStore's HNSW search keeps recall@K ≥ 0.95 against exact search at the default ``hnsw_ef``.

Guards the search parameter SIFT search depends on: K = 200 candidates must be (nearly) the exact
top 200, or SIFT selects from the wrong pool. bench/bench_store.py measured ef = 2K at
recall@200 0.9995 and ef = K at 0.992 on 100k × 384 (clustered and cone data), the engine's top
200 ~0.2 ms cheaper at K; the default is ef = max(K, 100), Qdrant's own rule. This test fails if a
change lowers it below the bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

from qdrant_sift.client.stores import EdgeStore

K = 200


def _clustered(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, n // 1000), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, d), np.float32)
    q = centres[rng.integers(0, len(centres), 8)] + 0.8 * rng.standard_normal((8, d), np.float32)
    return x, q


@pytest.fixture(scope="module")
def hnsw_store(tmp_path_factory: pytest.TempPathFactory) -> EdgeStore:
    x, _ = _clustered(8_000, 384, 0)
    store = EdgeStore(Path(tmp_path_factory.mktemp("ef")), "ef")
    store.create(384)  # ≥ 10 MB of vectors: below that Edge builds no HNSW
    for a in range(0, len(x), 2000):
        ids = list(range(a, a + 2000))
        store.upsert(ids, x[a : a + 2000], [{"i": i} for i in ids])
    store.optimize()
    yield store
    store.close()


def _recall(store: EdgeStore, q: np.ndarray, **params: object) -> float:
    approx = store.recall(q, K, both_directions=False, **params).ids
    exact = store.recall(q, K, both_directions=False, exact=True).ids
    return len(set(approx) & set(exact)) / K


def test_default_ef_keeps_recall_at_k(hnsw_store: EdgeStore) -> None:
    assert hnsw_store.indexed, "optimize() built no HNSW index: the test would compare exact"
    _, qs = _clustered(8_000, 384, 0)
    rec = [_recall(hnsw_store, q) for q in qs]
    assert np.mean(rec) >= 0.95 and min(rec) >= 0.9, rec


@pytest.mark.parametrize("ef", [K, 2 * K])
def test_explicit_ef_at_least_k_keeps_recall(hnsw_store: EdgeStore, ef: int) -> None:
    _, qs = _clustered(8_000, 384, 0)
    rec = [_recall(hnsw_store, q, hnsw_ef=ef) for q in qs]
    assert np.mean(rec) >= 0.95, rec


def test_both_directions_at_default_ef_keep_merged_recall(hnsw_store: EdgeStore) -> None:
    """The −q query is a probe of its best OPPOSITE_PROBE at ef = 64, then, only where the probe
    cannot settle it, its top K at ef = K (OPPOSITE_EF_FACTOR): the merged K largest |score| must
    still be (nearly) the exact ones."""
    from qdrant_sift.client.stores import default_ef

    assert default_ef(K, False) == K and default_ef(K, True) == K and default_ef(8, False) == 64
    assert default_ef(50, True) == 100  # Qdrant's own default for a top-50 (ef_construct)
    _, qs = _clustered(8_000, 384, 0)
    rec = []
    for q in qs:
        approx = hnsw_store.recall(q, K).ids
        exact = hnsw_store.recall(q, K, exact=True).ids
        rec.append(len(set(approx) & set(exact)) / K)
    assert np.mean(rec) >= 0.95 and min(rec) >= 0.9, rec


def test_opposite_probe_runs_at_its_own_small_ef() -> None:
    """Only the −q probe (ids only, fewer than k) runs at ``opposite_probe_ef``; q's top k and a
    full −q search keep ``default_ef``."""
    from qdrant_sift.client.stores import OPPOSITE_PROBE, default_ef

    ef = EdgeStore._ef
    assert EdgeStore.opposite_probe_ef == 16
    assert ef(EdgeStore, OPPOSITE_PROBE, False, K) == 16  # type: ignore[arg-type]
    assert ef(EdgeStore, K, False, K) == default_ef(K, False)  # type: ignore[arg-type]
    assert ef(EdgeStore, K, True, K) == default_ef(K, True)  # type: ignore[arg-type]


def test_both_stores_take_the_probe_ef_from_one_rule() -> None:
    """``query_ef`` is the one rule: the Qdrant server store asks it too (local mode ignores
    ``hnsw_ef``, so the server path is covered by the rule itself)."""
    import inspect

    from qdrant_sift.client.stores import OPPOSITE_PROBE, QdrantStore, default_ef, query_ef

    assert query_ef(OPPOSITE_PROBE, False, K) == 16
    assert query_ef(K, False, K) == default_ef(K, False)
    assert query_ef(K, True, K) == default_ef(K, True)
    assert query_ef(OPPOSITE_PROBE, False, K, probe_ef=40) == 40
    assert "query_ef(top, full, k)" in inspect.getsource(QdrantStore)


def test_opposite_probe_at_its_ef_settles_where_the_exact_one_would(hnsw_store: EdgeStore) -> None:
    """The probe at ef = 16 must reach the verdict an exact −q probe reaches, both where −q adds
    nothing (the data's own queries) and where −q is the strong side (queries pointing away
    from a cluster: then the probe must not settle, and the full −q search runs)."""
    from qdrant_sift.client.stores import OPPOSITE_PROBE
    from qdrant_sift.client.stores._hits import opposite_probe_settles

    _, qs = _clustered(8_000, 384, 0)
    verdicts = []
    for q in [*qs, *(-qs[:4])]:
        pos, neg = hnsw_store._search(
            [q, -q], K, None, {}, False, [True, False], [K, OPPOSITE_PROBE]
        )
        exact = hnsw_store._search([-q], K, None, {"exact": True}, False, [False], [OPPOSITE_PROBE])
        got = opposite_probe_settles(pos, neg, K, OPPOSITE_PROBE)
        assert got == opposite_probe_settles(pos, exact[0], K, OPPOSITE_PROBE)
        verdicts.append(got)
    assert verdicts[: len(qs)] == [True] * len(qs) and verdicts[len(qs) :] == [False] * 4
