"""The one-call selection (issue 15: _sift_np.greedy_once, _sift_once): the same
bits as the general route wherever it is taken, taken only where it may be, and bad input still
raises the general route's typed errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_sift.errors import InvalidInputError, NonFiniteError
from qdrant_sift.reranker import _select, _sift_compiled, _sift_np, _sift_once, select

pytestmark = pytest.mark.skipif(
    not _sift_compiled.compiled_available(), reason="the one-call path is the compiled loop's"
)


def _general(monkeypatch: pytest.MonkeyPatch, *args: object, **kw: object) -> object:
    with monkeypatch.context() as m:
        m.setattr(_select, "greedy_once", lambda *a: None)
        return select(*args, **kw)  # type: ignore[arg-type]


def _aligned_at(a: np.ndarray, offset: int) -> np.ndarray:
    raw = np.empty(a.nbytes + 128, np.uint8)
    base = -raw.ctypes.data % 64 + offset
    out = raw[base : base + a.nbytes].view(a.dtype).reshape(a.shape)
    out[:] = a
    return out


CASES = [  # (K, d, m, n, options)
    (200, 384, 1, 50, {}),
    (90, 37, 1, 45, {"normalize": False}),
    (120, 64, 1, 40, {"unique": True}),
    (64, 16, 3, 20, {}),  # normalised targets
    (100, 48, 1, 50, {"alpha": 0.6}),  # stops early
    (50, 8, 1, 25, {"lam": 1.0, "normalize": False}),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c[:4]) for c in CASES])
@pytest.mark.parametrize("offset", [0, 16])
def test_one_call_is_the_general_route_bit_for_bit(
    case: tuple, offset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    k, d, m, n, kw = case
    rng = np.random.default_rng(k + d)
    X = _aligned_at(rng.standard_normal((k, d)).astype(np.float32), offset)
    X[7] = X[3]  # an exact tie: the lower index wins on both routes
    Q = rng.standard_normal((m, d) if m > 1 else d).astype(np.float32)
    assert _sift_np.greedy_once(Q, X, n, 0.03, kw.get("normalize", True), False, None) is not None
    got = select(Q, X, n, device="cpu", **kw)
    ref = _general(monkeypatch, Q, X, n, device="cpu", **kw)
    np.testing.assert_array_equal(got.indices, ref.indices)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(got.variances, ref.variances)  # type: ignore[attr-defined]
    assert got.prior_variance == ref.prior_variance  # type: ignore[attr-defined]
    assert got.stopped_early == ref.stopped_early  # type: ignore[attr-defined]
    if "alpha" in kw:
        assert got.stopped_early and len(got) < n
    assert not got.indices.flags.writeable and not got.variances.flags.writeable


@pytest.mark.parametrize("n", [30, 60], ids=["one call", "general route"])
def test_every_input_type_reaches_the_same_bits(n: int) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((80, 24)).astype(np.float32)
    q = rng.standard_normal(24).astype(np.float32)
    ref = select(q, X, n, device="cpu")
    read_only = np.frombuffer(X.tobytes(), np.float32).reshape(X.shape)
    for xs in (X.tolist(), np.asfortranarray(X), X.astype(np.float64), X[::-1][::-1], read_only):
        got = select(q, xs, n, device="cpu")
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_array_equal(got.variances, ref.variances)


@pytest.mark.parametrize(
    "why",
    ["float64", "n over K/2", "raw targets", "strided", "too much work", "switched"],
)
def test_one_call_declines_what_it_does_not_cover(
    why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(9)
    X = rng.standard_normal((100, 32)).astype(np.float32)
    Q = rng.standard_normal(32).astype(np.float32)
    n, normalize = 20, True
    if why == "float64":
        X = X.astype(np.float64)
    elif why == "n over K/2":
        n = 51
    elif why == "raw targets":
        Q, normalize = rng.standard_normal((2, 32)).astype(np.float32), False
    elif why == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    elif why == "too much work":
        monkeypatch.setattr(_sift_np, "ONCE_WORK", 100)
    else:
        monkeypatch.setenv("QDRANT_SIFT_NUMBA", "0")
    assert _sift_np.greedy_once(Q, X, n, 0.03, normalize, False, None) is None
    assert len(select(Q, X, n, normalize=normalize, device="cpu")) == n  # the general route


@pytest.mark.parametrize(
    ("where", "error"),
    [("nan", NonFiniteError), ("inf", NonFiniteError), ("zero", InvalidInputError),
     ("overflow", InvalidInputError)],
)  # fmt: skip
def test_bad_values_raise_the_general_routes_error_and_pick_nothing(
    where: str, error: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((60, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    if where == "nan":
        X[41, 2] = np.nan
    elif where == "inf":
        q[0] = np.inf
    elif where == "zero":
        X[13] = 0.0
    else:
        X[:] = 1e30
    assert _sift_np.greedy_once(q, X, 10, 0.03, True, False, None) is None
    with pytest.raises(error) as fast:
        select(q, X, 10, device="cpu")
    with pytest.raises(error) as full:
        _general(monkeypatch, q, X, 10, device="cpu")
    assert str(fast.value) == str(full.value)


def test_cancellation_is_checked_before_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stop(Exception):
        pass

    def check() -> None:
        raise Stop

    X = np.random.default_rng(2).standard_normal((40, 8)).astype(np.float32)
    monkeypatch.setattr(_sift_np, "current_check", lambda: check)
    with pytest.raises(Stop):
        _sift_np.greedy_once(X[0].copy(), X, 10, 0.03, True, False, None)


def test_read_only_inputs_take_the_one_call_with_the_same_bits() -> None:
    """A decoded gRPC message is a read-only view of its bytes: copied into the scratch."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((120, 40)).astype(np.float32)
    q = rng.standard_normal(40).astype(np.float32)
    ref = _sift_np.greedy_once(q, X, 30, 0.03, True, False, None)
    Xr = np.frombuffer(X.tobytes(), np.float32).reshape(X.shape)
    qr = np.frombuffer(q.tobytes(), np.float32)
    assert not Xr.flags.writeable and not qr.flags.writeable
    got = _sift_np.greedy_once(qr, Xr, 30, 0.03, True, False, None)
    assert ref is not None and got is not None
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(Xr, X)  # the input is only read


def test_one_call_compiles_once_per_input_kind() -> None:
    rng = np.random.default_rng(4)
    for k, d in ((40, 8), (90, 33), (200, 384)):
        X = rng.standard_normal((k, d)).astype(np.float32)
        for offset in (0, 4):
            select(X[1].copy(), _aligned_at(X, offset), 10, device="cpu")
        ro = np.frombuffer(X.tobytes(), np.float32).reshape(k, d)
        select(np.frombuffer(X[1].tobytes(), np.float32), ro, 10, device="cpu")
    assert len(_sift_once._select.signatures) == 1
