"""The common call's short path checks what the full path checks, and its reused memory never
leaks into results or into forked children (issue 15: _validate.py, _selection.py, _scratch.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import SelectOptions
from qdrant_sift.reranker import _scratch, _validate, select
from qdrant_sift.reranker._sift_np import greedy_numpy

RNG = np.random.default_rng(15)
X = RNG.standard_normal((200, 48)).astype(np.float32)
Q = RNG.standard_normal(48).astype(np.float32)


def _bad(i: int) -> tuple[np.ndarray, np.ndarray]:
    x, q = X.copy(), Q.copy()
    if i == 0:
        x[17, 3] = np.nan
    elif i == 1:
        x[5, 0] = np.inf
    elif i == 2:
        q[4] = -np.inf
    elif i == 3:
        x[199] = 0.0  # zero norm with normalize
    elif i == 4:
        x[:] = 1e30  # finite, but squares overflow float32
    elif i == 5:
        q[:] = 0.0
    return q, x


@pytest.mark.parametrize("case", range(6))
def test_short_path_raises_what_the_full_checks_raise(
    case: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    q, x = _bad(case)
    with pytest.raises(InvalidInputError) as fast:
        select(q, x, 10, device="cpu")
    monkeypatch.setattr(_validate, "_F32_SUM_MAX", 0)  # no fast accept: the full checks only
    monkeypatch.setattr(_validate, "_DEFAULT_OPTS", {})
    with pytest.raises(InvalidInputError) as full:
        select(q, x, 10, device="cpu")
    assert type(fast.value) is type(full.value) and str(fast.value) == str(full.value)


def test_reused_options_are_per_n_and_only_for_default_calls() -> None:
    a = select(Q, X, 5, device="cpu")
    b = select(Q, X, 7, device="cpu")
    assert len(a) == 5 and len(b) == 7
    assert len(select(Q, X, np.int64(6), device="cpu")) == 6
    with pytest.raises(InvalidInputError, match="n must be >= 0"):
        select(Q, X, -1, device="cpu")
    raw = select(Q, X, 7, device="cpu", lam=1.0)
    ref = select(Q, X, 7, device="cpu", options=SelectOptions(lam=1.0))
    assert raw.variances.tobytes() == ref.variances.tobytes()
    assert raw.variances.tobytes() != b.variances.tobytes()


def test_results_own_their_memory_and_are_read_only() -> None:
    first = select(Q, X, 50, device="cpu")
    idx, var = first.indices.copy(), first.variances.copy()
    for seed in range(5):  # the same scratch region serves every later call
        rng = np.random.default_rng(seed)
        select(rng.standard_normal(48), rng.standard_normal((200, 48)), 50, device="cpu")
    np.testing.assert_array_equal(first.indices, idx)
    assert first.variances.tobytes() == var.tobytes()
    with pytest.raises(ValueError):
        first.variances[0] = 1.0
    with pytest.raises(ValueError):
        first.indices[0] = 1
    alpha = 0.5 / float(np.sqrt(first.variances[0]))  # keeps pick 1, likely cuts later
    cut = select(Q, X, 50, device="cpu", alpha=alpha)  # a prefix, still read-only
    assert 0 < len(cut) <= 50 and cut.stopped_early == (len(cut) < 50)
    np.testing.assert_array_equal(cut.indices, idx[: len(cut)])
    with pytest.raises(ValueError):
        cut.variances[0] = 1.0


def test_non_native_byte_order_is_converted() -> None:
    ref = select(Q, X, 20, device="cpu")
    got = select(Q.astype(">f4"), X.astype(">f4"), 20, device="cpu")
    np.testing.assert_array_equal(got.indices, ref.indices)
    assert got.variances.tobytes() == ref.variances.tobytes()


def test_pooled_scratch_gives_what_fresh_arrays_give(monkeypatch: pytest.MonkeyPatch) -> None:
    Xq = X[:1].copy()
    sqx = np.einsum("ij,ij->i", X, X).astype(np.float64)
    sqq = sqx[:1].copy()
    for m, n, unique in ((1, 50, False), (3, 40, True), (1, 300, False)):
        Qm = np.vstack([Xq] * m) + np.float32(0.1) * X[1 : m + 1]
        sqm = np.einsum("ij,ij->i", Qm, Qm).astype(np.float64)
        pooled = greedy_numpy(X, sqx, Qm, sqm, n=n, lam=0.03, normalize=True, unique=unique)
        with monkeypatch.context() as mp:
            mp.setattr(_scratch, "take", lambda nbytes: None)
            fresh = greedy_numpy(X, sqx, Qm, sqm, n=n, lam=0.03, normalize=True, unique=unique)
        np.testing.assert_array_equal(pooled[0], fresh[0])
        assert pooled[1].tobytes() == fresh[1].tobytes()
    assert sqq.size == 1


def test_scratch_regions_are_never_shared() -> None:
    a, b = _scratch.take(1000), _scratch.take(1000)
    assert a is not None and b is not None and a is not b
    _scratch.give(a)
    _scratch.give(b)
    assert _scratch.take(_scratch.REGION_MAX + 1) is None  # too big: the caller allocates
    c = _scratch.take(100_000)  # bigger than the pooled ones: a new region
    assert c is not None and c.mem.size >= 100_000
    _scratch.give(c)


def test_a_region_from_before_a_fork_is_kept_alive_not_pooled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    region = _scratch.take(1000)
    assert region is not None
    monkeypatch.setattr(_scratch, "_pool", [])
    monkeypatch.setattr(_scratch, "_forked_away", [])
    monkeypatch.setattr(_scratch, "_generation", region.generation + 1)  # as in a child
    _scratch.give(region)
    assert _scratch._pool == [] and _scratch._forked_away == [region]


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="needs fork")
def test_a_forked_child_selects_without_the_parents_regions() -> None:
    ref = select(Q, X, 50, device="cpu")
    _scratch.give(_scratch.take(1000))  # the parent holds a pooled region now
    assert _scratch._pool
    pid = os.fork()
    if pid == 0:  # the child: the parent's regions are not mapped here (MADV_DONTFORK)
        code = 1
        try:
            ok = not _scratch._pool and _scratch._forked_away
            fresh = _scratch.take(1000)  # a new region, mapped in this process
            assert fresh is not None
            fresh.mem[:] = 7  # would crash on an unmapped (inherited) region
            got = select(Q, X, 50, device="cpu")
            same = got.variances.tobytes() == ref.variances.tobytes()
            code = 0 if ok and same else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    again = select(Q, X, 50, device="cpu")  # the parent's pool still works
    assert again.variances.tobytes() == ref.variances.tobytes()
