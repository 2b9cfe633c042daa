"""Property tests of SIFT selection (hypothesis, few examples to stay fast on two cores)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qdrant_sift.reranker import select, select_batch

torch.set_num_threads(1)

PROPS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    seed = draw(st.integers(0, 2**31 - 1))
    k = draw(st.integers(1, 40))
    d = draw(st.integers(1, 12))
    m = draw(st.integers(1, 3))
    n = draw(st.integers(0, 30))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((k, d)) * rng.uniform(0.1, 10.0, size=(k, 1))
    Q = rng.standard_normal((m, d))
    return X, Q, n


@PROPS
@given(
    problems(),
    st.sampled_from(["sift", "nearest", "mmr", "random"]),
    st.sampled_from([1e-4, 0.01, 1.0, 100.0]),
    st.booleans(),
)
def test_variances_non_increasing_and_non_negative(
    problem: tuple[np.ndarray, np.ndarray, int], strategy: str, lam: float, normalize: bool
) -> None:
    X, Q, n = problem
    unique = strategy != "sift"
    n = min(n, X.shape[0]) if unique else n
    sel = select(Q, X, n, strategy=strategy, lam=lam, normalize=normalize, seed=0, device="cpu")
    var = np.concatenate([[sel.prior_variance], sel.variances])
    assert (var >= 0).all()
    assert (np.diff(var) <= 1e-9 * max(1.0, sel.prior_variance)).all()
    assert len(sel) == n


@PROPS
@given(problems(), st.sampled_from([1e-3, 0.01, 0.5]), st.booleans())
def test_first_pick_maximises_the_one_step_gain(
    problem: tuple[np.ndarray, np.ndarray, int], lam: float, normalize: bool
) -> None:
    X, Q, _ = problem
    q = Q[0]
    Xr, qr = (X, q)
    if normalize:
        Xr = X / np.linalg.norm(X, axis=1, keepdims=True)
        qr = q / np.linalg.norm(q)
    score = (Xr @ qr) ** 2 / (np.einsum("ij,ij->i", Xr, Xr) + lam)
    sel = select(q, X, 1, lam=lam, normalize=normalize, device="cpu", dtype=torch.float64)
    j = int(sel.indices[0])
    assert score[j] >= score.max() * (1 - 1e-9)
    assert j == int(np.flatnonzero(score >= score.max() * (1 - 1e-9))[0])  # lowest among ties


@PROPS
@given(problems())
def test_huge_lambda_repeats_the_top_neighbour(problem: tuple[np.ndarray, np.ndarray, int]) -> None:
    X, Q, n = problem
    q = Q[0]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos2 = (Xn @ (q / np.linalg.norm(q))) ** 2
    top = np.sort(cos2)
    if len(top) > 1 and top[-1] - top[-2] < 1e-3:
        return  # a near tie: "the" top neighbour is not well defined
    sel = select(q, X, max(n, 1), lam=1e6, device="cpu", dtype=torch.float64)
    assert set(sel.indices.tolist()) == {int(np.argmax(cos2))}


@PROPS
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(2, 8))
def test_duplicates_do_not_waste_sift_picks(seed: int, distinct: int, copies: int) -> None:
    """A pool of exact copies: SIFT spreads over distinct vectors, nearest neighbours do not."""
    rng = np.random.default_rng(seed)
    d = 16
    q = rng.standard_normal(d)
    base = rng.standard_normal((distinct, d)) + 0.5 * q  # all relevant to q
    pool = np.repeat(base, copies, axis=0)
    rng.shuffle(pool)
    n = distinct
    sift = select(q, pool, n, lam=0.01, device="cpu", dtype=torch.float64)
    near = select(q, pool, n, strategy="nearest", device="cpu", dtype=torch.float64)

    def n_distinct(idx: np.ndarray) -> int:
        return len({pool[i].tobytes() for i in idx})

    assert n_distinct(sift.indices) > n_distinct(near.indices)
    assert n_distinct(near.indices) == -(-n // copies)  # NN fills up on copies of the top vector
    assert sift.variances[-1] < near.variances[-1]


@PROPS
@given(st.lists(problems(), min_size=1, max_size=4), st.booleans())
def test_batch_equals_single(batch: list[tuple[np.ndarray, np.ndarray, int]], unique: bool) -> None:
    d = batch[0][0].shape[1]
    batch = [(X, Q, n) for X, Q, n in batch if X.shape[1] == d]
    n = min(p[2] for p in batch)
    if unique:
        n = min(n, *(p[0].shape[0] for p in batch))
    queries, cands = [p[1] for p in batch], [p[0] for p in batch]
    sels = select_batch(queries, cands, n, unique=unique, device="cpu", dtype=torch.float64)
    for (X, Q, _), sel in zip(batch, sels, strict=True):
        single = select(Q, X, n, unique=unique, device="cpu", dtype=torch.float64)
        np.testing.assert_allclose(sel.variances, single.variances, atol=1e-9)
        # picks agree unless two gains tie within rounding (then either is exact)
        if sel.indices.tolist() != single.indices.tolist():
            first = int(np.argmax(sel.indices != single.indices))
            assert abs(sel.variances[first] - single.variances[first]) < 1e-9
