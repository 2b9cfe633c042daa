"""The compiled pick loop (numba, optional) picks what the numpy loop picks (issue 15).

Both loops run the same recurrence; the compiled one sums the rank-n correction pick by pick
instead of by a BLAS mat-vec, so σ² may differ in the last bits but never the picks. From the
same Gram block that is all; computing its own kernel rows, its inner products differ from
syrk's in the last float32 bits, so σ² agrees to float32 rounding. Skipped where numba is not
installed (the numpy loop is then the only one, and every other selector test covers it).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from qdrant_sift.reranker import _sift_compiled, _sift_np, _sift_once
from qdrant_sift.reranker._sift_compiled import compiled_available
from qdrant_sift.reranker._sift_np import greedy_numpy

pytestmark = pytest.mark.skipif(not compiled_available(), reason="numba is not installed")


def _inputs(seed: int, k: int, m: int, d: int, dtype: type, dupes: bool) -> tuple:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((k, d)).astype(dtype)
    if dupes:  # exact ties: the lowest index must win in both loops
        X[k // 2] = X[1]
        X[k - 1] = X[1]
    Q = (X[:m] + 0.5 * rng.standard_normal((m, d))).astype(dtype)
    sqx = np.einsum("ij,ij->i", X, X).astype(np.float64)
    sqq = np.einsum("ij,ij->i", Q, Q).astype(np.float64)
    return X, sqx, Q, sqq


CASES = [
    # seed, K, m, d, dtype, n, lam, normalize, unique, alpha, dupes
    (0, 200, 1, 384, np.float32, 50, 0.1, True, False, None, False),
    (1, 200, 1, 384, np.float32, 50, 0.01, True, False, None, True),
    (2, 64, 3, 32, np.float64, 40, 0.1, True, False, None, False),
    (3, 64, 1, 32, np.float32, 64, 0.1, True, True, None, True),
    (4, 80, 2, 16, np.float32, 30, 1.0, False, False, None, False),
    (5, 120, 1, 48, np.float64, 60, 0.01, True, False, 2.0, False),
    (6, 300, 5, 24, np.float32, 100, 0.1, True, True, None, False),
    (7, 40, 1, 8, np.float32, 120, 0.05, True, False, None, False),  # n > K: repeats
]


@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) for c in CASES])
def test_compiled_loop_picks_what_numpy_picks(case: tuple) -> None:
    seed, k, m, d, dtype, n, lam, normalize, unique, alpha, dupes = case
    X, sqx, Q, sqq = _inputs(seed, k, m, d, dtype, dupes)
    kw = dict(n=n, lam=lam, normalize=normalize, unique=unique, alpha=alpha, gram=True)
    ref = greedy_numpy(X, sqx, Q, sqq, compiled=False, **kw)
    got = greedy_numpy(X, sqx, Q, sqq, compiled=True, **kw)
    assert _sift_compiled._state in ("ready", "uncached")  # it ran, no numpy fallback
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-9, atol=1e-12)
    assert got[2] == ref[2] and got[3] == ref[3]
    if unique:
        assert len(set(got[0].tolist())) == len(got[0])


@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) for c in CASES])
def test_compiled_kernel_rows_pick_what_numpy_picks(case: tuple) -> None:
    """The compiled loop computing each pick's kernel row itself (the default for n ≤ K/2)."""
    seed, k, m, d, dtype, n, lam, normalize, unique, alpha, dupes = case
    X, sqx, Q, sqq = _inputs(seed, k, m, d, dtype, dupes)
    kw = dict(n=n, lam=lam, normalize=normalize, unique=unique, alpha=alpha)
    ref = greedy_numpy(X, sqx, Q, sqq, compiled=False, gram=True, **kw)
    gram_shapes: list[tuple[int, ...]] = []
    real = _sift_compiled.compiled_steps()

    def recording(*args: Any) -> Any:
        gram_shapes.append(args[0].shape)  # empty when the loop computes the rows itself
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_sift_compiled, "compiled_steps", lambda: recording)
        got = greedy_numpy(X, sqx, Q, sqq, compiled=True, gram=False, **kw)
    assert gram_shapes and all(shape == (0, 0) for shape in gram_shapes)
    np.testing.assert_array_equal(got[0], ref[0])
    tol = 1e-5 if dtype == np.float32 else 1e-11  # the inner products' rounding, relative to m
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=tol * m)
    assert got[2] == ref[2] and got[3] == ref[3]


def test_kernel_rows_are_the_default_for_n_up_to_half_of_k() -> None:
    assert _sift_np._kernel_path(200, 50, None, object()) == "rows"
    assert _sift_np._kernel_path(200, 100, None, object()) == "rows"
    assert _sift_np._kernel_path(200, 101, None, object()) == "gram"
    assert _sift_np._kernel_path(200, 50, True, object()) == "gram"
    assert _sift_np._kernel_path(4096, 50, None, object()) == "matvec"  # > GRAM_MAX_K
    assert _sift_np._kernel_path(200, 50, None, None) == "gram"  # numpy: use_gram
    assert _sift_np._kernel_path(2000, 50, None, None) == "matvec"


def test_read_only_or_strided_inputs_are_copied_for_the_compiled_loop() -> None:
    X, sqx, Q, sqq = _inputs(13, 60, 1, 16, np.float32, False)
    ref = greedy_numpy(X, sqx, Q, sqq, n=20, lam=0.1, normalize=True, compiled=False)
    ro = X.copy()
    ro.flags.writeable = False
    wide = np.zeros((60, 32), np.float32)
    wide[:, ::2] = X  # a strided view
    fn = _sift_compiled.compiled_steps()
    greedy_numpy(X, sqx, Q, sqq, n=20, lam=0.1, normalize=True, compiled=True)
    specialisations = len(fn.signatures)
    for cand in (ro, wide[:, ::2]):
        got = greedy_numpy(cand, sqx, Q, sqq, n=20, lam=0.1, normalize=True, compiled=True)
        np.testing.assert_array_equal(got[0], ref[0])
    assert len(fn.signatures) == specialisations  # no new compilation for either layout
    assert not ro.flags.writeable  # the caller's array untouched


def test_compiled_loop_replays_a_given_order() -> None:
    X, sqx, Q, sqq = _inputs(9, 100, 2, 32, np.float32, False)
    order = np.random.default_rng(9).integers(0, 100, 40)
    kw = dict(n=40, lam=0.1, normalize=True, order=order, gram=True)
    ref = greedy_numpy(X, sqx, Q, sqq, compiled=False, **kw)
    got = greedy_numpy(X, sqx, Q, sqq, compiled=True, **kw)
    assert _sift_compiled._state in ("ready", "uncached")
    np.testing.assert_array_equal(got[0], order)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-9, atol=1e-12)


def test_cancellation_is_checked_between_compiled_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    X, sqx, Q, sqq = _inputs(10, 100, 1, 16, np.float32, False)
    calls: list[int] = []

    class Stop(Exception):
        pass

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:  # before the Gram, first chunk: fine; the second chunk: stop
            raise Stop

    monkeypatch.setattr(_sift_np, "current_check", lambda: check)
    monkeypatch.setattr(_sift_compiled, "CHUNK_WORK", 1)  # chunks of one pick
    with pytest.raises(Stop):
        greedy_numpy(X, sqx, Q, sqq, n=48, lam=0.1, normalize=True, gram=True, compiled=True)
    assert len(calls) == 3


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "rows"])
def test_compiled_calls_stay_short_however_far_the_greedy_has_got(
    monkeypatch: pytest.MonkeyPatch, gram: bool
) -> None:
    """Pick i costs i·width multiply-adds, so a fixed count of picks per compiled call grows
    without bound late in a long selection (~320 M multiply-adds a call at N = 10k, K = 2k,
    where cancellation is checked only between calls). Every call's work stays near the bound;
    the picks are those of one uninterrupted numpy run."""
    X, sqx, Q, sqq = _inputs(12, 100, 1, 16, np.float32, False)
    real = _sift_compiled.compiled_steps()
    assert real is not None
    spans: list[tuple[int, int]] = []

    def recording(*args: Any) -> Any:
        spans.append((args[13], args[14]))  # i0, i1
        return real(*args)

    monkeypatch.setattr(_sift_compiled, "compiled_steps", lambda: recording)
    monkeypatch.setattr(_sift_compiled, "CHUNK_WORK", 1 << 16)  # the bound, scaled down
    n, width, work = 1500, 101, 1 << 16
    row_work = 0 if gram else 100 * 16  # K·d a pick when the loop computes its own rows
    got = greedy_numpy(X, sqx, Q, sqq, n=n, lam=0.1, normalize=True, gram=gram, compiled=True)
    ref = greedy_numpy(X, sqx, Q, sqq, n=n, lam=0.1, normalize=True, gram=True, compiled=False)
    if gram:
        np.testing.assert_array_equal(got[0], ref[0])
    else:  # n ≫ K: late picks are near-ties; the rows' float32 rounding may break them otherwise
        np.testing.assert_array_equal(got[0][:100], ref[0][:100])
    assert spans[0][0] == 0 and spans[-1][1] == n and len(spans) > 20
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    for i0, i1 in spans:  # within the bound, or a single pick that alone exceeds it
        cost = width * (i1 * i1 - i0 * i0) // 2 + row_work * (i1 - i0)
        assert cost <= work or i1 == i0 + 1, (i0, i1)


@pytest.mark.parametrize("read", ["environ-data", "environ-get"])
def test_switched_off_by_environment(read: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch is read per call, from os.environ's live dict or (elsewhere) os.environ."""
    if read == "environ-get":
        monkeypatch.setattr(_sift_compiled, "_ENV_DATA", None)
    assert _sift_compiled.compiled_steps() is not None
    for off in ("0", " Off ", "false", "no"):
        monkeypatch.setenv("QDRANT_SIFT_NUMBA", off)
        assert not compiled_available() and _sift_compiled.compiled_steps() is None
    monkeypatch.setenv("QDRANT_SIFT_NUMBA", "1")
    assert _sift_compiled.compiled_steps() is not None
    monkeypatch.delenv("QDRANT_SIFT_NUMBA")
    assert compiled_available() and _sift_compiled.compiled_steps() is not None


@pytest.mark.parametrize("strategy", ["sift", "nearest", "mmr"])
def test_cpu_batch_runs_the_single_engine_per_prompt(strategy: str) -> None:
    """With the compiled loop, a CPU batch of per-prompt candidates (ragged K here) is the
    single-prompt engine per prompt: the very same selections as one select() each."""
    from qdrant_sift.reranker import _select, select, select_batch

    rng = np.random.default_rng(11)
    qs = [rng.standard_normal((1 + b % 2, 24)).astype(np.float32) for b in range(5)]
    cands = [rng.standard_normal((30 + 7 * b, 24)).astype(np.float32) for b in range(5)]
    prompts = [_select._prepare(q, c, _select.resolve_device("cpu"), _select.torch.float32,
                                True, "") for q, c in zip(qs, cands, strict=True)]  # fmt: skip
    assert _select._compiled_each(prompts)
    kw = dict(strategy=strategy, unique=strategy == "sift", lam=0.1, device="cpu")
    got = select_batch(qs, cands, 20, **kw)
    for q, c, g in zip(qs, cands, got, strict=True):
        one = select(q, c, 20, **kw)
        np.testing.assert_array_equal(g.indices, one.indices)
        np.testing.assert_allclose(g.variances, one.variances, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("b", "n", "tabled"), [(16, 30, True), (2, 20, False), (8, 70, True)])
def test_cpu_batch_sharing_candidates_reads_one_kernel_table(b: int, n: int, tabled: bool) -> None:
    """Prompts sharing one candidate set read one table of kernel rows when together they need
    more than K of them; each selection is then what select() gives alone: bit for bit where
    select() computes its own rows (n ≤ K/2), to float32 rounding where it reads syrk's Gram."""
    from qdrant_sift.reranker import _select, select, select_batch

    rng = np.random.default_rng(17)
    k, d = 120, 40
    X = rng.standard_normal((k, d)).astype(np.float32)
    X[7] = X[3]  # an exact tie: the lowest index wins in both
    qs = [rng.standard_normal((1 + i % 2, d)).astype(np.float32) for i in range(b)]
    tables: list[np.ndarray | None] = []
    real = _select.kernel_table

    def spy(x: np.ndarray) -> np.ndarray | None:
        tables.append(real(x))
        return tables[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_select, "kernel_table", spy)
        got = select_batch(qs, X[1:], n, lam=0.05, device="cpu")  # one row in: not line-aligned
    assert (len(tables) == 1 and tables[0] is not None) == tabled and len(tables) <= 1
    for q, g in zip(qs, got, strict=True):
        one = select(q, X[1:], n, lam=0.05, device="cpu")
        np.testing.assert_array_equal(g.indices, one.indices)
        if 2 * n <= k - 1:
            np.testing.assert_array_equal(g.variances, one.variances)
        else:
            np.testing.assert_allclose(g.variances, one.variances, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("d", [37, 384])
def test_kernel_rows_do_not_depend_on_where_x_lies(d: int) -> None:
    """A misaligned X is copied onto a cache line only when pooled scratch can hold it; either
    way the selection must be the same bits (the sums' order is the code's, not the address's)."""
    rng = np.random.default_rng(21)
    k, n = 90, 30
    X0 = rng.standard_normal((k, d)).astype(np.float32)
    Q = rng.standard_normal((1, d)).astype(np.float32)
    sqx = np.einsum("ij,ij->i", X0, X0).astype(np.float64)
    sqq = np.einsum("ij,ij->i", Q, Q).astype(np.float64)
    fn = _sift_compiled.compiled_steps()
    raw = np.empty(X0.nbytes + 128, np.uint8)
    base = -raw.ctypes.data % 64
    runs = []
    for offset in (0, 4, 16, 48):
        X = raw[base + offset : base + offset + X0.nbytes].view(np.float32).reshape(k, d)
        X[:] = X0
        got = _sift_compiled.run_compiled(fn, np.empty((0, 0), np.float32), X, Q, sqx, sqq,
                                          0.05, True, False, 1.0, n, None, None, None)  # fmt: skip
        assert got is not None
        runs.append(got)
    for picks, var, _ in runs[1:]:
        np.testing.assert_array_equal(picks, runs[0][0])
        np.testing.assert_array_equal(var, runs[0][1])


@pytest.mark.parametrize("d", [1, 7, 8, 17, 33, 100, 384, 768])
def test_squared_norms_are_the_kernel_rows_diagonal_bits(d: int) -> None:
    """The squared norms (and the compiled loop's k(x, x)) come from their own loop, not a call
    per row, and must still be the very bits of the rows x_j·X on the diagonal."""
    rng = np.random.default_rng(d)
    X = rng.standard_normal((40, d)).astype(np.float32)
    table = _sift_compiled.kernel_table(X)
    norms = _sift_once.sqnorms(X, True)
    assert table is not None and norms is not None
    np.testing.assert_array_equal(norms, np.diag(table))
