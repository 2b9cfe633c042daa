"""The batched engine keeps candidates unnormalised (noise λ‖x_j‖² instead of rescaled columns).

That rewrite is exact only if it is right for every norm: candidates and targets whose norms span
six orders of magnitude, ragged batches, repeats and ``unique``, on every batched engine (numpy and
the torch code path CUDA runs, Gram block or mat-vec columns, shared or per-prompt candidates),
must match the brute-force float64 reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_select_reference import brute_sift

from qdrant_sift.reranker import select_batch
from qdrant_sift.reranker._sift_batch import BatchInput, greedy_batch

torch.set_num_threads(1)


def _scaled(seed: int, k: int, m: int, d: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((k, d)) * np.logspace(-3, 3, k)[rng.permutation(k), None]
    Q = rng.standard_normal((m, d)) * np.logspace(-2, 2, m)[:, None]
    return X, Q


def _sq(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


def _inputs(X: np.ndarray, Q: np.ndarray, use_torch: bool) -> BatchInput:
    if use_torch:
        return BatchInput(
            X=torch.from_numpy(X),
            sqx=torch.from_numpy(_sq(X)),
            Q=torch.from_numpy(Q),
            sqq=torch.from_numpy(_sq(Q)),
        )
    return BatchInput(X=X, sqx=_sq(X), Q=Q, sqq=_sq(Q))


@pytest.mark.parametrize("use_torch", [False, True])
@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize(("unique", "normalize"), [(False, True), (True, True), (False, False)])
def test_per_prompt_ragged_batch_matches_reference(
    use_torch: bool, gram: bool, unique: bool, normalize: bool
) -> None:
    problems = [_scaled(s, k, m) for s, k, m in ((1, 18, 1), (2, 11, 3), (3, 25, 2))]
    prompts = [_inputs(X, Q, use_torch) for X, Q in problems]
    n = 10
    got = greedy_batch(prompts, None, n=n, lam=0.05, normalize=normalize, unique=unique, gram=gram)
    for (X, Q), (idx, var) in zip(problems, got, strict=True):
        ref_idx, ref_var, _ = brute_sift(X, Q, n, 0.05, unique=unique, normalize=normalize)
        assert idx.tolist() == ref_idx
        scale = max(1.0, float(np.sum(Q * Q))) if not normalize else 1.0
        np.testing.assert_allclose(var, ref_var, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("use_torch", [False, True])
@pytest.mark.parametrize("gram", [True, False])
def test_shared_candidates_with_wild_norms_match_reference(use_torch: bool, gram: bool) -> None:
    X, _ = _scaled(4, 20, 1)
    queries = [_scaled(5 + s, 1, m)[1] for s, m in enumerate((1, 2, 4))]
    shared = _inputs(X, X[:0], use_torch)
    prompts = [_inputs(X, Q, use_torch) for Q in queries]
    got = greedy_batch(prompts, shared, n=12, lam=0.01, normalize=True, unique=False, gram=gram)
    for Q, (idx, var) in zip(queries, got, strict=True):
        ref_idx, ref_var, _ = brute_sift(X, Q, 12, 0.01)
        assert idx.tolist() == ref_idx
        np.testing.assert_allclose(var, ref_var, rtol=0, atol=1e-9)


def test_public_batch_float32_with_wild_norms() -> None:
    problems = [_scaled(s, 30, m) for s, m in ((8, 1), (9, 2))]
    sels = select_batch(
        [Q for _, Q in problems], [X for X, _ in problems], 15, lam=0.01, device="cpu"
    )
    for (X, Q), sel in zip(problems, sels, strict=True):
        ref_idx, ref_var, _ = brute_sift(X.astype(np.float32), Q.astype(np.float32), 15, 0.01)
        assert sel.indices.tolist() == ref_idx
        np.testing.assert_allclose(sel.variances, ref_var, rtol=0, atol=1e-5)


@pytest.mark.parametrize("gram", [True, False])
def test_shared_chunk_borders_change_nothing(monkeypatch: pytest.MonkeyPatch, gram: bool) -> None:
    """Shared mat-vec batches run in wide chunks, Gram ones in L2-sized chunks: same results."""
    import qdrant_sift.reranker._sift_batch as sb

    X, _ = _scaled(12, 16, 1)
    queries = [_scaled(20 + s, 1, m)[1] for s, m in enumerate((1, 2, 1, 3, 1))]
    shared = _inputs(X, X[:0], False)
    prompts = [_inputs(X, Q, False) for Q in queries]

    def run() -> list[tuple[np.ndarray, np.ndarray]]:
        return greedy_batch(prompts, shared, n=6, lam=0.01, normalize=True, unique=True, gram=gram)

    whole = run()
    row = 8 * 6 * (16 + 3)  # bytes of W per prompt
    monkeypatch.setattr(sb, "_CPU_CHUNK_BYTES", row)  # one prompt per chunk ...
    monkeypatch.setattr(sb, "_SHARED_CHUNK_BYTES", 2 * row)  # ... or two with mat-vec columns
    for (a_idx, a_var), (b_idx, b_var), Q in zip(whole, run(), queries, strict=True):
        assert a_idx.tolist() == b_idx.tolist() == brute_sift(X, Q, 6, 0.01, unique=True)[0]
        np.testing.assert_allclose(a_var, b_var, rtol=0, atol=1e-12)
