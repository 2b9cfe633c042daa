"""One error tree on both sides: every bad call raises the same ``qdrant_sift.errors`` class
in-process (``LocalReranker``, a store) and through the gRPC service (``RemoteReranker`` against
a real server on loopback). Types are compared exactly, not through ``pytest.raises`` (which
would accept any subclass), so a remote call that degrades to a parent class fails here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from qdrant_sift import errors
from qdrant_sift.reranker import LocalReranker, RemoteReranker
from qdrant_sift.reranker._cancel import CallScope, cancel_scope, checkpoint
from qdrant_sift.reranker._limits import Limits
from qdrant_sift.reranker._server import serve

RNG = np.random.default_rng(5)
D = 16
X = RNG.standard_normal((40, D)).astype(np.float32)
Q = RNG.standard_normal(D).astype(np.float32)
QM = RNG.standard_normal((3, D)).astype(np.float32)

Call = Callable[[Any], Any]

# Each row: a call that must fail, run on a LocalReranker and on a RemoteReranker.
BAD: dict[str, Call] = {
    # shapes
    "query-3d": lambda r: r.select(np.zeros((2, 2, D), np.float32), X, 3),
    "candidates-1d": lambda r: r.select(Q, X[0], 3),
    "candidates-empty": lambda r: r.select(Q, X[:0], 3),
    "query-empty": lambda r: r.select(np.zeros((0, D), np.float32), X, 3),
    "query-str": lambda r: r.select("a prompt", X, 3),
    "candidates-ragged": lambda r: r.select(Q, [[1.0] * D, [1.0] * (D - 1)], 3),
    "batch-count": lambda r: r.select_batch([Q, Q], [X], 3),
    "batch-queries-str": lambda r: r.select_batch("ab", X, 3),
    # non-finite values
    "nan-query": lambda r: r.select(np.full(D, np.nan), X, 3),
    "inf-candidates": lambda r: r.select(Q, np.where(X > 2.0, np.inf, X), 3),
    "nan-batch-member": lambda r: r.select_batch([Q, np.full(D, np.nan)], X, 3),
    # dimensions
    "dims": lambda r: r.select(Q[:5], X, 3),
    "dims-multi": lambda r: r.select(QM[:, :7], X, 3),
    "batch-dims": lambda r: r.select_batch([Q, Q[:8]], [X, X[:, :8]], 3),
    "batch-member-dims": lambda r: r.select_batch([Q, Q], [X, X[:, :8]], 3),
    # options
    "strategy": lambda r: r.select(Q, X, 3, strategy="bogus"),
    "lam-negative": lambda r: r.select(Q, X, 3, lam=-1.0),
    "lam-zero": lambda r: r.select(Q, X, 3, lam=0.0),
    "lam-nan": lambda r: r.select(Q, X, 3, lam=float("nan")),
    "alpha": lambda r: r.select(Q, X, 3, alpha=0.0),
    "diversity": lambda r: r.select(Q, X, 3, strategy="mmr", diversity=1.5),
    "seed": lambda r: r.select(Q, X, 3, strategy="random", seed=1.5),
    "unique-flag": lambda r: r.select(Q, X, 3, unique="yes"),
    "n-negative": lambda r: r.select(Q, X, -1),
    "n-float": lambda r: r.select(Q, X, 2.5),
    "n-bool": lambda r: r.select(Q, X, True),
    "unique-n-above-k": lambda r: r.select(Q, X, len(X) + 1, unique=True),
    "nearest-n-above-k": lambda r: r.select(Q, X, len(X) + 1, strategy="nearest"),
    "batch-options": lambda r: r.select_batch([Q], X, 3, lam=-1.0),
}


def _raised(call: Call, target: Any) -> BaseException:
    try:
        call(target)
    except Exception as exc:
        return exc
    pytest.fail(f"{target!r} accepted the call")


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteReranker]:
    with (
        serve(port=0, device="cpu", max_workers=2) as handle,
        RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=30, retries=0) as client,
    ):
        yield client


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_the_same_class(case: str, remote: RemoteReranker) -> None:
    local = _raised(BAD[case], LocalReranker(device="cpu"))
    over_grpc = _raised(BAD[case], remote)
    assert isinstance(local, errors.QdrantSiftError), repr(local)
    assert type(over_grpc) is type(local), f"in-process {local!r}, remote {over_grpc!r}"


def test_a_closed_reranker_refuses_alike(remote: RemoteReranker) -> None:
    local = LocalReranker(device="cpu")
    local.close()
    other = RemoteReranker(remote.target)
    other.close()
    a, b = _raised(BAD["strategy"], local), _raised(lambda r: r.select(Q, X, 3), other)
    assert type(a) is type(b) is errors.RerankerError


# --- unknown collection: a store in-process, the Recall RPC remotely -----------------------------


def test_unknown_collection_is_collection_not_found() -> None:
    from qdrant_client import QdrantClient

    from qdrant_sift.client.stores import QdrantStore

    qc = QdrantClient(location=":memory:")
    store = QdrantStore("docs", client=qc)
    store.create(D, distance="cosine")
    store.upsert(list(range(len(X))), X)
    local = _raised(lambda s: s.recall(Q, 5), QdrantStore("missing", client=qc))
    with (
        serve(port=0, device="cpu", store_factory=lambda c: QdrantStore(c, client=qc)) as h,
        RemoteReranker(f"grpc://127.0.0.1:{h.port}", retries=0) as client,
    ):
        over_grpc = _raised(lambda r: r.search("missing", Q, k=5, n=3), client)
        dims = _raised(lambda r: r.search("docs", Q[:4], k=5, n=3), client)
        name = _raised(lambda r: r.search("../x", Q, k=5, n=3), client)
    assert type(local) is type(over_grpc) is errors.CollectionNotFoundError
    want_dims = _raised(lambda s: s.recall(Q[:4], 5), store)
    assert type(dims) is type(want_dims) is errors.DimensionMismatchError
    want_name = _raised(lambda _: QdrantStore("../x", client=qc), None)
    assert type(name) is type(want_name)


# --- limits: the service's own rule, raised as the public class with its name -------------------


LIMITS = Limits(max_k=30, max_d=12, max_n=5, max_m=2, max_batch=2, max_cost=1_000)


@pytest.fixture(scope="module")
def limited() -> Iterator[RemoteReranker]:
    with (
        serve(port=0, device="cpu", max_workers=2, limits=LIMITS) as handle,
        RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=30, retries=0) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("limit", "call"),
    [
        ("max_k", lambda r: r.select(Q[:8], X[:, :8], 3)),
        ("max_d", lambda r: r.select(Q, X[:20], 3)),
        ("max_n", lambda r: r.select(Q[:8], X[:20, :8], 6)),
        ("max_m", lambda r: r.select(QM[:, :8], X[:20, :8], 3)),
        ("max_batch", lambda r: r.select_batch([Q[:8]] * 3, X[:20, :8], 3)),
        ("max_cost", lambda r: r.select(Q[:8], X[:25, :8], 5)),
    ],
)
def test_limits_raise_server_limit_error(limit: str, call: Call, limited: RemoteReranker) -> None:
    exc = _raised(call, limited)
    assert type(exc) is errors.ServerLimitError and exc.limit == limit, repr(exc)
    assert isinstance(exc, errors.InvalidInputError)  # caught like any other bad input


@pytest.mark.parametrize("rows", [20, 400], ids=["service-check", "transport-check"])
def test_message_size_limit_is_server_limit_error(rows: int) -> None:
    """Just above the limit the service refuses the request; far above it gRPC's transport
    does, before the service sees it. Either way: the same limit, the same class."""
    cands = RNG.standard_normal((rows, D)).astype(np.float32)  # rows·16·4 bytes > 1 KiB
    with (
        serve(port=0, device="cpu", limits=Limits(max_message_bytes=1024)) as handle,
        RemoteReranker(f"grpc://127.0.0.1:{handle.port}", retries=0) as client,
    ):
        exc = _raised(lambda r: r.select(Q, cands, 3), client)
    assert type(exc) is errors.ServerLimitError and exc.limit == "max_message_bytes", repr(exc)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_public_class_survives_the_trailer(name: str) -> None:
    """Whatever class the service names in ``x-sift-error``, the client rebuilds exactly it."""
    from qdrant_sift.reranker._remote_errors import typed_error

    cls = getattr(errors, name)
    assert name in (errors.__doc__ or ""), f"{name} missing from the tree in the docstring"
    if cls in (errors.SelectionCancelledError,):  # travels as CANCELLED / DEADLINE_EXCEEDED
        return
    code = (
        grpc.StatusCode.INVALID_ARGUMENT
        if issubclass(cls, ValueError)
        else grpc.StatusCode.INTERNAL
    )
    exc = typed_error(code, "details", {"x-sift-error": name}, "rid")
    assert type(exc) is cls and "details" in str(exc)


def test_server_limit_error_is_public() -> None:
    from qdrant_sift.reranker import _limits

    assert "ServerLimitError" in errors.__all__
    assert _limits.ServerLimitError is errors.ServerLimitError  # one class, raised by the limits
    assert "ServerLimitError" in (errors.__doc__ or "")


# --- cancellation and deadlines ------------------------------------------------------------------


class Spinner:
    """A selector whose calls (after the server's warm-up) only end by being stopped."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.armed = False

    def select(self, *args: Any, **kwargs: Any) -> Any:
        if not self.armed:  # the server's warm-up call
            return LocalReranker(device="cpu").select(*args, **kwargs)
        self.entered.set()
        while True:
            checkpoint()
            time.sleep(0.005)

    def select_batch(self, *args: Any, **kwargs: Any) -> Any:
        if not self.armed:  # the warm-up's batches
            return LocalReranker(device="cpu").select_batch(*args, **kwargs)
        return self.select()


def _local_stopped(scope: CallScope) -> BaseException:
    big = RNG.standard_normal((3000, D)).astype(np.float32)
    with cancel_scope(scope.check):
        return _raised(lambda r: r.select(Q, big, 500), LocalReranker(device="cpu"))


def test_deadline_is_selection_cancelled_on_both_sides() -> None:
    local = _local_stopped(CallScope(timeout=0.0))
    spinner = Spinner()
    with serve(port=0, device="cpu", selector=spinner) as handle:
        spinner.armed = True
        with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", retries=0) as client:
            over_grpc = _raised(lambda r: r.select(Q, X, 3, timeout=0.3), client)
    assert spinner.entered.is_set()
    assert type(local) is type(over_grpc) is errors.SelectionCancelledError
    assert local.reason == over_grpc.reason == "deadline"  # type: ignore[attr-defined]


def test_cancellation_is_selection_cancelled_on_both_sides() -> None:
    scope = CallScope()
    scope.cancel()
    local = _local_stopped(scope)
    spinner = Spinner()
    handle = serve(port=0, device="cpu", selector=spinner)
    spinner.armed = True
    got: dict[str, BaseException] = {}
    with RemoteReranker(f"grpc://127.0.0.1:{handle.port}", retries=0, timeout=30) as client:
        caller = threading.Thread(
            target=lambda: got.setdefault("exc", _raised(lambda r: r.select(Q, X, 3), client))
        )
        caller.start()
        assert spinner.entered.wait(10)
        handle.stop(grace=0.2)  # the running call is cancelled when the grace runs out
        caller.join(10)
    assert type(local) is type(got["exc"]) is errors.SelectionCancelledError
    assert local.reason == got["exc"].reason == "cancelled"  # type: ignore[attr-defined]
