"""The baselines' fast path: a fixed order's variances from one Cholesky factor of the picks.

``select(strategy="nearest" | "mmr" | "random")`` on the CPU no longer replays SIFT's greedy over
all K candidates to report variances; it factors the n picked points once. These tests hold it
to the engine's replay (same picks, variances within 1e-9 in float64 and 1e-5 in float32), check
that the engine is not called at all, that ties still go to the lowest index on the partial-sort
path, and that a failed factorisation falls back to the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_select_reference import posterior_variance, prepare

from qdrant_sift.reranker import _select, select
from qdrant_sift.reranker._baselines import _nearest, replay_variances
from qdrant_sift.reranker._sift_np import greedy_numpy

torch.set_num_threads(1)


def _sq(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a.astype(np.float64), a.astype(np.float64))


def _engine_replay(
    X: np.ndarray, Q: np.ndarray, order: np.ndarray, lam: float, normalize: bool
) -> np.ndarray:
    _, var, _, _ = greedy_numpy(
        X, _sq(X), Q, _sq(Q), n=order.size, lam=lam, normalize=normalize, order=order
    )
    return var


@pytest.mark.parametrize("strategy", ["nearest", "mmr", "random"])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lam", [0.01, 1.0])
def test_fast_variances_equal_the_engine_replay(
    strategy: str, m: int, normalize: bool, lam: float
) -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 16))
    Q = rng.standard_normal((m, 16))
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        sel = select(
            Q, X, 40, strategy=strategy, lam=lam, normalize=normalize, seed=1, device="cpu",
            dtype=dtype,
        )  # fmt: skip
        Xc = X.astype(np.float32 if dtype == torch.float32 else np.float64)
        Qc = Q.astype(Xc.dtype)
        ref = _engine_replay(Xc, Qc, sel.indices, lam, normalize)
        np.testing.assert_allclose(sel.variances, ref, rtol=0, atol=atol * max(1.0, ref[0]))
    Xr, Qr = prepare(X, Q, normalize)
    picks = sel.indices.tolist()
    brute = [posterior_variance(Xr, Qr, picks[: i + 1], lam) for i in (0, 9, 39)]
    np.testing.assert_allclose(sel.variances[[0, 9, 39]], brute, rtol=1e-5, atol=1e-5)


def test_nearest_never_runs_the_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The O(K·d) path: relevance, a partial sort and an n×n factor; no SIFT recurrence."""

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the greedy engine ran for a baseline")

    monkeypatch.setattr(_select, "greedy_numpy", boom)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 32)).astype(np.float32)
    sel = select(X[3], X, 50, strategy="nearest", device="cpu")
    assert sel.indices[0] == 3 and len(sel) == 50 and sel.strategy == "nearest"
    assert np.all(np.diff(sel.variances) <= 1e-12)


@pytest.mark.parametrize("k,n", [(1000, 10), (1000, 200), (64, 63), (50, 50)])
def test_partial_sort_keeps_stable_tie_order(k: int, n: int) -> None:
    rng = np.random.default_rng(k + n)
    rel = rng.integers(0, 7, k).astype(np.float64)  # many ties, also across the cut
    assert _nearest(rel, n).tolist() == np.argsort(-rel, kind="stable")[:n].tolist()


def test_nearest_ties_go_to_the_lowest_index() -> None:
    X = np.tile(np.eye(4), (100, 1))  # 400 rows, 100 copies of each axis
    q = np.array([1.0, 0.0, 0.0, 0.0])
    sel = select(q, X, 5, strategy="nearest", device="cpu", dtype=torch.float64)
    assert sel.indices.tolist() == [0, 4, 8, 12, 16]


def test_alpha_cut_is_the_same_as_the_engine() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 8))
    q = rng.standard_normal(8)
    for alpha in (0.3, 1.0, 5.0):
        fast = select(
            q, X, 30, strategy="nearest", alpha=alpha, lam=0.01, device="cpu", dtype=torch.float64
        )
        order = select(q, X, 30, strategy="nearest", device="cpu", dtype=torch.float64).indices
        var = _engine_replay(X, q[None, :], order, 0.01, True)
        steps = np.arange(1, 31)
        bad = alpha * steps * np.sqrt(var) > 1.0
        keep = int(np.argmax(bad)) if bad.any() else 30
        assert fast.indices.tolist() == order[:keep].tolist()
        assert fast.stopped_early == (keep < 30)


def test_failed_factor_falls_back_to_the_engine() -> None:
    X = np.ones((10, 4))  # identical points: K_SS + λI is singular to rounding at tiny λ
    q = np.ones(4)
    order = np.arange(10)
    got = replay_variances(X, _sq(X), q[None, :], _sq(q[None, :]), order, lam=1e-300,
                           normalize=True)  # fmt: skip
    assert got is None
    sel = select(q, X, 10, strategy="nearest", lam=1e-300, device="cpu", dtype=torch.float64)
    ref = _engine_replay(X, q[None, :], order, 1e-300, True)
    assert sel.indices.tolist() == order.tolist()
    np.testing.assert_allclose(sel.variances, ref, atol=1e-9)
