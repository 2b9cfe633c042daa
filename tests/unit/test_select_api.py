"""The selector's contract: input forms, typed errors, batching, Selection and LocalReranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
    NonFiniteError,
    RerankerError,
)
from qdrant_sift.reranker import (
    STRATEGIES,
    LocalReranker,
    Reranker,
    Selection,
    select,
    select_batch,
)

torch.set_num_threads(1)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 6)).astype(np.float32)
Q = RNG.standard_normal(6).astype(np.float32)


def test_strategies_constant() -> None:
    assert STRATEGIES == ("sift", "nearest", "mmr", "random")


# --- typed errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": -1}, InvalidInputError, "n must be >= 0"),
        ({"n": 2.0}, InvalidInputError, "n must be an int"),
        ({"n": True}, InvalidInputError, "n must be an int"),
        ({"lam": 0.0}, ConfigError, "lam"),
        ({"lam": -1.0}, ConfigError, "lam"),
        ({"lam": float("nan")}, ConfigError, "finite"),
        ({"alpha": 0.0}, ConfigError, "alpha"),
        ({"alpha": -2.0}, ConfigError, "alpha"),
        ({"strategy": "bogus"}, ConfigError, "unknown strategy"),
        ({"diversity": 1.5}, ConfigError, "diversity"),
        ({"diversity": -0.1}, ConfigError, "diversity"),
        ({"unique": True, "n": 21}, ConfigError, "distinct"),
        ({"strategy": "nearest", "n": 21}, ConfigError, "distinct"),
        ({"strategy": "random", "n": 21}, ConfigError, "distinct"),
        ({"dtype": torch.float16}, ConfigError, "dtype"),
        ({"device": "tpu"}, ConfigError, "device"),
        ({"seed": "x", "strategy": "random"}, ConfigError, "seed"),
        ({"unique": 1}, ConfigError, "bool"),
    ],
)
def test_bad_options_raise_typed_errors(kwargs: dict, error: type, match: str) -> None:
    args = {"n": 5, **kwargs}
    n = args.pop("n")
    args.pop("device", None)
    with pytest.raises(error, match=match):
        select(Q, X, n, device=kwargs.get("device", "cpu"), **args)
    with pytest.raises(error, match=match):
        select_batch([Q], [X], n, device=kwargs.get("device", "cpu"), **args)


def _with_nan(a: np.ndarray, value: float) -> np.ndarray:
    b = a.copy()
    b.flat[7] = value
    return b


@pytest.mark.parametrize(
    ("query", "cands", "error", "match"),
    [
        (np.ones(5, np.float32), X, DimensionMismatchError, "dimension 5"),
        (Q, X[:, :4], DimensionMismatchError, "dimension"),
        (_with_nan(np.tile(Q, (2, 1)), np.nan), X, NonFiniteError, "query row 1"),
        (Q, _with_nan(X, np.inf), NonFiniteError, "candidates row 1"),
        (Q, _with_nan(X, -np.inf), NonFiniteError, "NaN or infinity"),
        (np.zeros(6, np.float32), X, InvalidInputError, "zero norm"),
        (Q, np.vstack([X, np.zeros((1, 6), np.float32)]), InvalidInputError, "row 20"),
        (np.ones((1, 1, 6)), X, InvalidInputError, r"\(d,\) or \(m, d\)"),
        (Q, X[0], InvalidInputError, "2-D"),
        (Q, X[None], InvalidInputError, "2-D"),
        (np.zeros((0, 6)), X, InvalidInputError, "no vectors"),
        (Q, np.zeros((0, 6)), InvalidInputError, "K = 0"),
        (Q, [], InvalidInputError, "K = 0"),
        (np.array(["a", "b"]), X, InvalidInputError, "real numbers"),
        (Q, X.astype(np.complex64), InvalidInputError, "real numbers"),
        (Q, torch.ones(3, 6, dtype=torch.bool), InvalidInputError, "real numbers"),
        (Q, np.full((3, 6), 1e30, np.float32), InvalidInputError, "too large"),
    ],
)
def test_bad_arrays_raise_typed_errors(
    query: object, cands: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        select(query, cands, 3, device="cpu")


def test_errors_are_value_errors() -> None:
    for cls in (InvalidInputError, DimensionMismatchError, NonFiniteError, ConfigError):
        assert issubclass(cls, ValueError)


def test_zero_norm_is_fine_without_normalisation() -> None:
    cands = np.vstack([X, np.zeros((1, 6), np.float32)])
    sel = select(Q, cands, 3, normalize=False, device="cpu")
    assert 20 not in sel.indices.tolist()


def test_float32_overflow_is_fine_in_float64() -> None:
    big = np.full((3, 6), 1e30) * RNG.standard_normal((3, 6))
    sel = select(big[0], big, 2, device="cpu", dtype=torch.float64)
    assert sel.indices[0] == 0


def test_batch_errors_name_the_prompt() -> None:
    with pytest.raises(DimensionMismatchError, match=r"queries\[1\]"):
        select_batch([Q, np.ones(4)], X, 3, device="cpu")
    with pytest.raises(InvalidInputError, match="2 queries but 3 candidate sets"):
        select_batch([Q, Q], [X, X, X], 3, device="cpu")
    with pytest.raises(InvalidInputError, match="sequence"):
        select_batch(3, X, 3, device="cpu")


# --- empty and edge cases ---------------------------------------------------------------------


def test_n_zero_gives_empty_selection_with_prior() -> None:
    sel = select(np.tile(Q, (3, 1)), X, 0, device="cpu")
    assert len(sel) == 0 and sel.prior_variance == 3.0 and not sel.stopped_early
    assert sel.indices.dtype == np.int64
    empty = select(Q, np.zeros((0, 6)), 0, device="cpu")
    assert len(empty) == 0 and empty.prior_variance == 1.0
    assert select_batch([], X, 3, device="cpu") == []
    [b] = select_batch([Q], [np.zeros((0, 6))], 0, device="cpu")
    assert len(b) == 0


def test_ties_go_to_the_lowest_index() -> None:
    base = RNG.standard_normal((4, 6)).astype(np.float32)
    cands = np.vstack([base[:2], base[3], base[3], base[2]])  # rows 2 and 3 are copies
    q = base[3]
    assert select(q, cands, 1, device="cpu").indices.tolist() == [2]
    assert select(q, cands, 1, strategy="nearest", device="cpu").indices.tolist() == [2]
    [b] = select_batch([q], [cands], 1, device="cpu")
    assert b.indices.tolist() == [2]


# --- input forms ------------------------------------------------------------------------------


def test_inputs_as_tensors_lists_and_other_dtypes() -> None:
    ref = select(Q, X, 6, device="cpu")
    variants = [
        (torch.from_numpy(Q), torch.from_numpy(X)),
        (torch.from_numpy(Q).double(), torch.from_numpy(X).double()),
        (torch.from_numpy(Q).requires_grad_(), torch.from_numpy(X).requires_grad_()),
        (Q.tolist(), X.tolist()),
        (Q.astype(np.float16).astype(np.float32), X),
        (np.asfortranarray(Q[None]), np.asfortranarray(X)),
        (Q, X[::1, :]),
    ]
    for q, c in variants:
        sel = select(q, c, 6, device="cpu")
        assert sel.indices.tolist() == ref.indices.tolist()
    half = select(torch.from_numpy(Q).bfloat16(), torch.from_numpy(X).half(), 6, device="cpu")
    assert len(half) == 6
    ints = select(np.array([1, 0, 0, 0, 0, 0]), np.eye(6, dtype=np.int64), 1, device="cpu")
    assert ints.indices.tolist() == [0]


def test_dtype_float64_accepted_in_every_spelling() -> None:
    for dt in (torch.float64, np.float64, "float64"):
        assert len(select(Q, X, 3, device="cpu", dtype=dt)) == 3


def test_batch_results_in_input_order_with_ragged_inputs() -> None:
    rng = np.random.default_rng(1)
    queries = [rng.standard_normal(6), rng.standard_normal((4, 6)), rng.standard_normal((2, 6))]
    cands = [rng.standard_normal((k, 6)) for k in (9, 30, 17)]
    for kwargs in ({}, {"unique": True}, {"lam": 0.5}, {"normalize": False}):
        batch = select_batch(queries, cands, 8, device="cpu", **kwargs)
        for b, (q, c) in enumerate(zip(queries, cands, strict=True)):
            single = select(q, c, 8, device="cpu", **kwargs)
            assert batch[b].indices.tolist() == single.indices.tolist(), (b, kwargs)
            np.testing.assert_allclose(batch[b].variances, single.variances, atol=1e-6)
            assert batch[b].prior_variance == pytest.approx(single.prior_variance)
    reversed_batch = select_batch(queries[::-1], cands[::-1], 8, device="cpu")
    assert [s.indices.tolist() for s in reversed_batch] == [
        s.indices.tolist() for s in select_batch(queries, cands, 8, device="cpu")
    ][::-1]


def test_batch_accepts_2d_query_array_and_3d_candidates() -> None:
    rng = np.random.default_rng(2)
    qs = rng.standard_normal((3, 6))
    cs = rng.standard_normal((3, 12, 6))
    batch = select_batch(qs, cs, 4, device="cpu")
    assert [s.indices.tolist() for s in batch] == [
        select(qs[b], cs[b], 4, device="cpu").indices.tolist() for b in range(3)
    ]
    batch_t = select_batch(torch.from_numpy(qs), torch.from_numpy(cs), 4, device="cpu")
    assert [s.indices.tolist() for s in batch_t] == [s.indices.tolist() for s in batch]


def test_batch_of_baselines() -> None:
    rng = np.random.default_rng(3)
    queries = [rng.standard_normal(6) for _ in range(3)]
    cands = [rng.standard_normal((k, 6)) for k in (10, 14, 12)]
    for strategy in ("nearest", "mmr", "random"):
        batch = select_batch(queries, cands, 5, strategy=strategy, seed=1, device="cpu")
        for q, c, s in zip(queries, cands, batch, strict=True):
            single = select(q, c, 5, strategy=strategy, seed=1, device="cpu")
            assert s.indices.tolist() == single.indices.tolist()
            assert s.strategy == strategy


# --- Selection and rerankers ------------------------------------------------------------------


def test_selection_is_frozen_and_read_only() -> None:
    sel = select(Q, X, 4, device="cpu")
    with pytest.raises(AttributeError):
        sel.indices = np.zeros(4, np.int64)  # type: ignore[misc]
    with pytest.raises(ValueError):
        sel.indices[0] = 3
    assert sel.indices.dtype == np.int64 and sel.variances.dtype == np.float64
    assert len(sel) == 4
    np.testing.assert_allclose(sel.gains.sum(), sel.prior_variance - sel.variances[-1])
    assert (sel.gains >= -1e-12).all()
    with pytest.raises(InvalidInputError):
        Selection(
            indices=[1, 2],
            variances=[0.5],
            prior_variance=1.0,
            stopped_early=False,
            strategy="sift",
        )


def test_local_reranker_delegates_and_closes() -> None:
    with LocalReranker(device="cpu", dtype=torch.float64) as rr:
        assert isinstance(rr, Reranker)
        assert (
            rr.select(Q, X, 5).indices.tolist()
            == select(Q, X, 5, device="cpu", dtype=torch.float64).indices.tolist()
        )
        assert len(rr.select_batch([Q, Q], X, 3)) == 2
        assert rr.select(Q, X, 3, strategy="nearest").strategy == "nearest"
    with pytest.raises(RerankerError, match="closed"):
        rr.select(Q, X, 3)
    with pytest.raises(ConfigError):
        LocalReranker(dtype=torch.int32)


def test_default_device_is_cpu_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the default device is CUDA")
    assert LocalReranker().device.type == "cpu"
    assert len(select(Q, X, 3)) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(4)
    queries = [rng.standard_normal(32), rng.standard_normal((3, 32))]
    cands = [rng.standard_normal((200, 32)), rng.standard_normal((150, 32))]
    for q, c in zip(queries, cands, strict=True):
        cpu = select(q, c, 40, device="cpu", dtype=torch.float64)
        gpu = select(torch.from_numpy(q).cuda(), c, 40, device="cuda", dtype=torch.float64)
        assert gpu.indices.tolist() == cpu.indices.tolist()
        np.testing.assert_allclose(gpu.variances, cpu.variances, atol=1e-9)
    batch = select_batch(queries, cands, 40, device="cuda", unique=True)
    for q, c, s in zip(queries, cands, batch, strict=True):
        assert s.indices.tolist() == select(q, c, 40, device="cpu", unique=True).indices.tolist()


def test_batch_chunking_keeps_results_and_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU batches run in cache-sized chunks; chunk borders must not change anything."""
    import qdrant_sift.reranker._sift_batch as sb

    rng = np.random.default_rng(5)
    queries = [rng.standard_normal((m, 6)) for m in (1, 3, 2, 1, 2)]
    cands = [rng.standard_normal((k, 6)) for k in (30, 9, 17, 25, 12)]
    whole = select_batch(queries, cands, 7, device="cpu", unique=True)
    monkeypatch.setattr(sb, "_CPU_CHUNK_BYTES", 8 * 7 * 40 * 2)  # two prompts per chunk
    chunked = select_batch(queries, cands, 7, device="cpu", unique=True)
    nearest = select_batch(queries, cands, 7, strategy="nearest", device="cpu")
    for a, b, q, c, s in zip(whole, chunked, queries, cands, nearest, strict=True):
        assert a.indices.tolist() == b.indices.tolist()
        np.testing.assert_allclose(a.variances, b.variances, atol=1e-12)
        ref = select(q, c, 7, strategy="nearest", device="cpu")
        assert s.indices.tolist() == ref.indices.tolist()
        np.testing.assert_allclose(s.variances, ref.variances, atol=1e-6)


def test_single_thread_blas_restores_and_nests() -> None:
    import threading

    from qdrant_sift.reranker import _blas

    libs = _blas._blas_controllers()
    if not libs:
        pytest.skip("threadpoolctl not installed: the BLAS cap is a no-op")
    before = [lc.get_num_threads() for lc in libs]
    errors: list[BaseException] = []

    with _blas.single_thread_blas():  # capped in the main thread
        assert all(lc.get_num_threads() == 1 for lc in libs)
        with _blas.single_thread_blas():  # nested: still capped, not restored early
            pass
        assert all(lc.get_num_threads() == 1 for lc in libs)
    assert [lc.get_num_threads() for lc in libs] == before

    def worker() -> None:  # concurrent selections: no errors, setting restored afterwards
        try:
            for _ in range(20):
                with _blas.single_thread_blas():
                    select(Q, X, 5, device="cpu")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [lc.get_num_threads() for lc in libs] == before


def test_torch_code_path_on_cpu_tensors_matches_numpy_path() -> None:
    """What CUDA runs (torch conversion, torch norms, torch batch engine), here on CPU tensors."""
    from qdrant_sift.reranker import _select as ss
    from qdrant_sift.reranker._sift_batch import BatchInput
    from qdrant_sift.reranker._validate import as_torch_matrix, check_options, row_sqnorms_torch

    cpu = torch.device("cpu")
    rng = np.random.default_rng(6)
    queries = [rng.standard_normal(6), rng.standard_normal((3, 6))]
    cands = [rng.standard_normal((15, 6)), rng.standard_normal((9, 6))]
    for strategy, unique in (("sift", False), ("sift", True), ("mmr", True), ("random", True)):
        opts = check_options(6, strategy, 0.01, None, unique, True, 0.5, 2)
        prompts = []
        for q, c in zip(queries, cands, strict=True):
            tq = as_torch_matrix(q, "query", cpu, torch.float64, allow_vector=True)
            tc = as_torch_matrix(c, "candidates", cpu, torch.float64, allow_vector=False)
            prompts.append(
                BatchInput(
                    X=tc,
                    sqx=row_sqnorms_torch(tc, "candidates", True),
                    Q=tq,
                    sqq=row_sqnorms_torch(tq, "query", True),
                )
            )
        got = ss._run_batch(prompts, None, opts)
        for q, c, sel in zip(queries, cands, got, strict=True):
            ref = select(
                q,
                c,
                6,
                strategy=strategy,
                unique=unique,
                seed=2,
                lam=0.01,
                device="cpu",
                dtype=torch.float64,
            )
            assert sel.indices.tolist() == ref.indices.tolist()
            np.testing.assert_allclose(sel.variances, ref.variances, atol=1e-9)


def test_torch_validation_helpers() -> None:
    from qdrant_sift.reranker._validate import row_sqnorms_torch

    t = torch.ones(3, 4)
    t[1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="row 1"):
        row_sqnorms_torch(t, "candidates", True)
    with pytest.raises(InvalidInputError, match="zero norm"):
        row_sqnorms_torch(torch.zeros(2, 4), "candidates", True)
    with pytest.raises(InvalidInputError, match="too large"):
        row_sqnorms_torch(torch.full((2, 4), 1e30), "candidates", True)
    sq = row_sqnorms_torch(torch.full((2, 4), 2.0), "candidates", True)
    assert sq.dtype == torch.float64 and sq.tolist() == [16.0, 16.0]
