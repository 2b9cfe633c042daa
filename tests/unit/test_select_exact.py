"""Exactness of the SIFT selector against the brute-force float64 reference.

Every engine (lean numpy with Gram block or per-pick kernel rows, each as the compiled loop
where numba is and as the numpy loop, the batched engine as numpy and as
torch) must reproduce the reference's picks exactly and its variances within 1e-5 (float32
kernel) or 1e-9 (float64 kernel).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_select_reference import brute_sift, posterior_variance, prepare

from qdrant_sift.reranker import select, select_batch
from qdrant_sift.reranker._sift_batch import BatchInput, greedy_batch
from qdrant_sift.reranker._sift_np import greedy_numpy

torch.set_num_threads(1)


def _problem(seed: int, k: int = 24, m: int = 1, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, d)), rng.standard_normal((m, d))


def _sq(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a).astype(np.float64)


def _engine(
    name: str, X: np.ndarray, Q: np.ndarray, n: int, lam: float, unique: bool, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    if name.startswith("np-"):  # np-gram / np-rows: compiled where numba is; -numpy: never
        idx, var, _, _ = greedy_numpy(
            X,
            _sq(X),
            Q,
            _sq(Q),
            n=n,
            lam=lam,
            normalize=normalize,
            unique=unique,
            gram=name.startswith("np-gram"),
            compiled=False if name.endswith("-numpy") else None,
        )
        return idx, var
    if name.startswith("batch-np"):
        p = BatchInput(X=X, sqx=_sq(X), Q=Q, sqq=_sq(Q))
    else:  # the torch code path (the one CUDA runs), here on CPU tensors
        tx, tq = torch.from_numpy(X), torch.from_numpy(Q)
        p = BatchInput(X=tx, sqx=torch.from_numpy(_sq(X)), Q=tq, sqq=torch.from_numpy(_sq(Q)))
    gram = name.endswith("gram")
    shared = None
    if "shared" in name:  # the candidates as the batch's shared matrix
        shared = BatchInput(X=p.X, sqx=p.sqx, Q=p.Q[:0], sqq=p.sqq[:0])
    [(idx, var)] = greedy_batch(
        [p], shared, n=n, lam=lam, normalize=normalize, unique=unique, gram=gram
    )
    return idx, var


ENGINES = [
    "np-gram",
    "np-rows",
    "np-gram-numpy",
    "np-rows-numpy",
    "batch-np-gram",
    "batch-np-matvec",
    "batch-torch-gram",
    "batch-torch-matvec",
    "batch-np-shared-gram",
    "batch-np-shared-matvec",
    "batch-torch-shared-gram",
    "batch-torch-shared-matvec",
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("m", "unique", "normalize"),
    [(1, False, True), (3, False, True), (1, True, True), (2, True, False)],
)
def test_engines_match_brute_force(engine: str, m: int, unique: bool, normalize: bool) -> None:
    X, Q = _problem(10 * m + unique, m=m)
    X32, Q32 = X.astype(np.float32), Q.astype(np.float32)
    n = 15
    idx, var = _engine(engine, X32, Q32, n, 0.01, unique, normalize)
    ref_idx, ref_var, _ = brute_sift(X32, Q32, n, 0.01, unique=unique, normalize=normalize)
    assert idx.tolist() == ref_idx
    np.testing.assert_allclose(var, ref_var, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "engine", ["np-gram", "np-rows", "np-rows-numpy", "batch-np-gram", "batch-torch-matvec"]
)
def test_float64_kernel_is_tighter(engine: str) -> None:
    X, Q = _problem(3, m=2)
    idx, var = _engine(engine, X, Q, 12, 0.05, False, True)
    ref_idx, ref_var, _ = brute_sift(X, Q, 12, 0.05)
    assert idx.tolist() == ref_idx
    np.testing.assert_allclose(var, ref_var, rtol=0, atol=1e-9)


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0])
def test_public_select_matches_brute_force(lam: float) -> None:
    X, Q = _problem(7, k=30, m=2, d=12)
    sel = select(Q, X, 20, lam=lam, device="cpu")
    ref_idx, ref_var, _ = brute_sift(X.astype(np.float32), Q.astype(np.float32), 20, lam)
    assert sel.indices.tolist() == ref_idx
    np.testing.assert_allclose(sel.variances, ref_var, atol=1e-5)
    assert sel.prior_variance == 2.0 and not sel.stopped_early and sel.strategy == "sift"


def test_repeats_when_n_exceeds_k() -> None:
    X, Q = _problem(5, k=6, d=5)
    sel = select(Q[0], X, 14, lam=0.01, device="cpu", dtype=torch.float64)
    ref_idx, ref_var, _ = brute_sift(X, Q, 14, 0.01)
    assert sel.indices.tolist() == ref_idx
    assert len(set(ref_idx)) < 14  # the reference repeats too
    np.testing.assert_allclose(sel.variances, ref_var, atol=1e-9)


def test_adaptive_stopping_cuts_the_prefix() -> None:
    X, Q = _problem(11, k=40, d=16)
    _, full_var, _ = brute_sift(X, Q, 12, 0.01)
    score = np.arange(1, 13) * np.sqrt(full_var)  # α·n·σ_n ≤ 1  ⇔  α ≤ 1/score[n-1]
    # the last pick (among the first 8) whose score beats every earlier one can be the cut
    cut = max(i for i in range(1, 8) if score[i] > score[:i].max())
    alpha = 2.0 / (score[cut] + score[:cut].max())
    ref_idx, ref_var, ref_stop = brute_sift(X, Q, 12, 0.01, alpha=alpha)
    sel = select(Q, X, 12, alpha=alpha, lam=0.01, device="cpu", dtype=torch.float64)
    assert ref_stop and sel.stopped_early
    assert sel.indices.tolist() == ref_idx and len(ref_idx) == cut
    np.testing.assert_allclose(sel.variances, ref_var, atol=1e-9)
    [bsel] = select_batch([Q], [X], 12, alpha=alpha, lam=0.01, device="cpu", dtype=torch.float64)
    assert bsel.indices.tolist() == ref_idx and bsel.stopped_early


def test_alpha_that_breaks_at_the_first_pick_selects_nothing() -> None:
    X, Q = _problem(2)
    sel = select(Q, X, 5, alpha=1e6, device="cpu")
    assert len(sel) == 0 and sel.stopped_early and sel.prior_variance == 1.0
    [bsel] = select_batch([Q], X, 5, alpha=1e6, device="cpu")
    assert len(bsel) == 0 and bsel.stopped_early


def test_loose_alpha_keeps_everything() -> None:
    X, Q = _problem(2)
    sel = select(Q, X, 5, alpha=1e-6, device="cpu")
    assert len(sel) == 5 and not sel.stopped_early


def test_variances_of_baselines_are_the_posterior_of_their_picks() -> None:
    X, Q = _problem(4, k=20, m=2)
    Xr, Qr = prepare(X, Q, True)
    for strategy in ("nearest", "mmr", "random"):
        sel = select(
            Q, X, 8, strategy=strategy, seed=3, lam=0.01, device="cpu", dtype=torch.float64
        )
        picks = sel.indices.tolist()
        assert len(set(picks)) == 8
        expected = [posterior_variance(Xr, Qr, picks[: i + 1], 0.01) for i in range(8)]
        np.testing.assert_allclose(sel.variances, expected, atol=1e-9)
        [bsel] = select_batch(
            [Q], [X], 8, strategy=strategy, seed=3, lam=0.01, device="cpu", dtype=torch.float64
        )
        assert bsel.indices.tolist() == picks
        np.testing.assert_allclose(bsel.variances, expected, atol=1e-9)


def test_nearest_is_top_n_by_mean_cosine() -> None:
    X, Q = _problem(8, k=25, m=3)
    Xr, Qr = prepare(X, Q, True)
    rel = (Xr @ Qr.T).mean(axis=1)
    sel = select(Q, X, 10, strategy="nearest", device="cpu", dtype=torch.float64)
    assert sel.indices.tolist() == np.argsort(-rel, kind="stable")[:10].tolist()


def test_mmr_follows_its_definition() -> None:
    X, Q = _problem(9, k=25, m=1)
    Xr, Qr = prepare(X, Q, True)
    rel = (Xr @ Qr.T).mean(axis=1)
    div = 0.3
    picks: list[int] = []
    for _ in range(10):
        best, best_s = -1, -np.inf
        for j in range(25):
            if j in picks:
                continue
            red = max((float(Xr[j] @ Xr[s]) for s in picks), default=0.0)
            score = (1 - div) * rel[j] - div * red if picks else rel[j]
            if score > best_s:
                best, best_s = j, score
        picks.append(best)
    sel = select(Q, X, 10, strategy="mmr", diversity=div, device="cpu", dtype=torch.float64)
    assert sel.indices.tolist() == picks
    zero = select(Q, X, 10, strategy="mmr", diversity=0.0, device="cpu", dtype=torch.float64)
    near = select(Q, X, 10, strategy="nearest", device="cpu", dtype=torch.float64)
    assert zero.indices.tolist() == near.indices.tolist()


def test_random_is_seeded_and_distinct() -> None:
    X, Q = _problem(1, k=30)
    a = select(Q, X, 12, strategy="random", seed=5, device="cpu")
    b = select(Q, X, 12, strategy="random", seed=5, device="cpu")
    c = select(Q, X, 12, strategy="random", seed=6, device="cpu")
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert len(set(a.indices.tolist())) == 12


def test_normalize_false_uses_raw_inner_products() -> None:
    X, Q = _problem(12, k=20, m=2)
    X = X * np.linspace(0.2, 3.0, 20)[:, None]
    sel = select(Q, X, 10, normalize=False, lam=0.01, device="cpu", dtype=torch.float64)
    ref_idx, ref_var, _ = brute_sift(X, Q, 10, 0.01, normalize=False)
    assert sel.indices.tolist() == ref_idx
    np.testing.assert_allclose(sel.variances, ref_var, atol=1e-9)
    assert sel.prior_variance == pytest.approx(float(np.sum(Q * Q)))


def test_shared_and_per_prompt_candidates_agree_in_batch() -> None:
    X, _ = _problem(13, k=40, d=10)
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal(10), rng.standard_normal((3, 10)), rng.standard_normal(10)]
    shared = select_batch(queries, X, 15, device="cpu")
    per = select_batch(queries, [X, X, X], 15, device="cpu")
    for s, p, q in zip(shared, per, queries, strict=True):
        single = select(q, X, 15, device="cpu")
        assert s.indices.tolist() == p.indices.tolist() == single.indices.tolist()
        np.testing.assert_allclose(s.variances, single.variances, atol=1e-6)
        np.testing.assert_allclose(p.variances, single.variances, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_single_candidate_repeated(engine: str) -> None:
    """K = 1: every pick repeats the only point (regression: state must not alias the Gram)."""
    X, Q = np.array([[0.35, -0.2]]), np.array([[0.64, 0.1]])
    idx, var = _engine(engine, X, Q, 4, 0.01, False, True)
    ref_idx, ref_var, _ = brute_sift(X, Q, 4, 0.01)
    assert idx.tolist() == ref_idx == [0, 0, 0, 0]
    np.testing.assert_allclose(var, ref_var, atol=1e-9)
