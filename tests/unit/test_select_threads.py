"""A CPU batch on several threads gives what it gives on one, stops when cancelled, and refuses a
bad thread count before any work (issue 15; reranker/_parallel.py)."""

from __future__ import annotations

import contextlib
import contextvars
import threading

import numpy as np
import pytest

from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    NonFiniteError,
    SelectionCancelledError,
)
from qdrant_sift.reranker import LocalReranker, _parallel, _select, select, select_batch
from qdrant_sift.reranker._cancel import CallScope, cancel_scope, current_check
from qdrant_sift.reranker._sift_compiled import compiled_available

needs_compiled = pytest.mark.skipif(
    not compiled_available(), reason="the per-prompt (threaded) batch path needs numba"
)


def _batch(seed: int, b: int, d: int, n: int, max_m: int = 3) -> tuple[list, list]:
    """Ragged K (some below n: SIFT repeats), 1..max_m targets, some exact duplicate rows."""
    rng = np.random.default_rng(seed)
    qs, cands = [], []
    for i in range(b):
        k = int(rng.integers(max(2, n // 2), 3 * n))
        c = rng.standard_normal((k, d)).astype(np.float32)
        if i % 3 == 0:
            c[k // 2] = c[0]  # ties: the lowest index must win on every thread
        m = int(rng.integers(1, max_m + 1))
        qs.append(rng.standard_normal((m, d) if m > 1 or i % 2 else (d,)).astype(np.float32))
        cands.append(c)
    return qs, cands


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.indices, y.indices)
        assert x.variances.tobytes() == y.variances.tobytes()  # bit for bit
        assert x.prior_variance == y.prior_variance and x.stopped_early == y.stopped_early


@needs_compiled
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"unique": True},
        {"alpha": 3.0},
        {"lam": 1.0, "normalize": False},
        {"strategy": "nearest"},
        {"strategy": "mmr", "diversity": 0.3},
        {"strategy": "random", "seed": 4},
    ],
    ids=["sift", "unique", "alpha", "raw", "nearest", "mmr", "random"],
)
def test_threaded_batch_equals_serial_bit_for_bit(kw: dict) -> None:
    for seed in range(4):
        n = 12 + 5 * seed
        qs, cands = _batch(seed, 23, 16 + 8 * seed, n)
        if kw.get("unique") or kw.get("strategy"):
            cands = [c if c.shape[0] >= n else np.vstack([c] * 3) for c in cands]
        serial = select_batch(qs, cands, n, device="cpu", threads=1, **kw)
        for threads in (2, 3, 8):
            _same(select_batch(qs, cands, n, device="cpu", threads=threads, **kw), serial)
        if not kw.get("strategy"):  # SIFT: the batch is the single-call engine per prompt
            _same(
                serial,
                [select(q, c, n, device="cpu", **kw) for q, c in zip(qs, cands, strict=True)],
            )


@needs_compiled
def test_threaded_batch_runs_on_several_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    names: set[str] = set()
    greedy = _select._greedy_prompt
    both = threading.Barrier(2, timeout=10)

    def spy(*args: object, **kwargs: object) -> object:
        names.add(threading.current_thread().name)
        if len(names) <= 2:
            with contextlib.suppress(threading.BrokenBarrierError):
                both.wait()  # returns only once two threads hold a prompt at the same time
        return greedy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_select, "_greedy_prompt", spy)
    qs, cands = _batch(7, 8, 16, 10)
    select_batch(qs, cands, 10, device="cpu", threads=2)
    assert len(names) == 2 and not both.broken


@needs_compiled
def test_a_cancelled_threaded_batch_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    greedy = _select._greedy_prompt
    scope = CallScope()

    both = threading.Barrier(2, timeout=10)

    def spy(*args: object, **kwargs: object) -> object:
        started.append(threading.current_thread().name)
        if len(started) <= 2:
            both.wait()  # the first two prompts run at once: one of them on a helper
        assert current_check() == scope.check  # helpers see the caller's scope
        if len(started) == 5:
            scope.cancel()
        return greedy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_select, "_greedy_prompt", spy)
    qs, cands = _batch(8, 64, 16, 10)
    with cancel_scope(scope.check), pytest.raises(SelectionCancelledError):
        select_batch(qs, cands, 10, device="cpu", threads=3)
    assert 5 <= len(started) < 64  # stopped: no prompt taken after the failure was seen
    assert len(set(started)) >= 2


def test_run_indexed_raises_the_lowest_failure_typed() -> None:
    both = threading.Barrier(2, timeout=10)

    class Boom(Exception):
        pass

    def fn(i: int) -> int:
        if i < 2:  # prompts 0 and 1 fail at the same time, on two threads
            both.wait()
            raise Boom(f"prompt {i}")
        return i

    for _ in range(5):
        with pytest.raises(Boom, match="prompt 0"):
            _parallel.run_indexed(fn, 10, 2)
        both.reset()


def test_run_indexed_takes_no_work_after_a_failure() -> None:
    calls: list[int] = []

    def fn(i: int) -> int:
        calls.append(i)
        if i == 3:
            raise KeyError(i)
        return i

    with pytest.raises(KeyError):
        _parallel.run_indexed(fn, 1000, 2)
    assert len(calls) < 1000
    assert _parallel.run_indexed(lambda i: i * i, 50, 4) == [i * i for i in range(50)]
    assert _parallel.run_indexed(lambda i: i, 0, 4) == []


def test_run_indexed_helpers_run_in_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("t15_var", default="unset")
    both = threading.Barrier(2, timeout=10)

    def fn(i: int) -> tuple[str, str]:
        if i < 2:
            both.wait()  # prompts 0 and 1 run at once: one of them on a helper
        return var.get(), threading.current_thread().name

    token = var.set("caller")
    try:
        got = _parallel.run_indexed(fn, 40, 2)
    finally:
        var.reset(token)
    assert {v for v, _ in got} == {"caller"} and len({t for _, t in got}) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", np.float64(2.0)])
def test_bad_thread_counts_raise_before_any_work(
    bad: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started")

    for engine in ("greedy_numpy", "greedy_once", "_greedy_prompt"):
        monkeypatch.setattr(_select, engine, never)
    monkeypatch.setattr(_select, "greedy_batch", never)
    qs, cands = _batch(9, 3, 8, 4)
    with pytest.raises(ConfigError, match="threads"):
        select_batch(qs, cands, 4, device="cpu", threads=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threads"):
        LocalReranker(device="cpu", threads=bad)  # type: ignore[arg-type]


def test_default_threads_are_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_sift import cpus

    monkeypatch.setattr(_parallel, "_cpus", None)
    monkeypatch.setattr(_parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 2.5)  # a quota of 2.5 CPUs
    assert _parallel.usable_cpus() == 3
    monkeypatch.setattr(_parallel, "_cpus", None)
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    assert _parallel.check_threads(None) == 6
    assert LocalReranker(device="cpu").threads == 6
    assert LocalReranker(device="cpu", threads=np.int64(2)).threads == 2


@needs_compiled
def test_local_reranker_passes_its_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    run = _select.run_indexed

    def spy(fn: object, count: int, threads: int) -> object:
        seen.append(threads)
        return run(fn, count, threads)  # type: ignore[arg-type]

    monkeypatch.setattr(_select, "run_indexed", spy)
    qs, cands = _batch(10, 4, 8, 4)
    rr = LocalReranker(device="cpu", threads=3)
    rr.select_batch(qs, cands, 4)
    rr.select_batch(qs, cands, 4, threads=1)
    assert seen == [3, 1]


@pytest.mark.parametrize("threads", [1, 4])
def test_bad_prompts_raise_as_a_serial_pass_would_before_any_work(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the thread count, the error is the one a serial pass meets first (the lowest bad
    prompt, its own checks before the batch-dimension rule), and no selection starts."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started")

    for engine in ("greedy_numpy", "greedy_once", "_greedy_prompt"):
        monkeypatch.setattr(_select, engine, never)
    for bad_dim, bad_nan, err, where in ((3, 9, DimensionMismatchError, "queries[3]"),
                                         (6, 2, NonFiniteError, "queries[2]")):  # fmt: skip
        qs, cands = _batch(11, 12, 8, 4, max_m=1)
        qs = [q.reshape(-1) for q in qs]
        qs[bad_dim] = np.ones(5, np.float32)
        cands[bad_dim] = np.ones((7, 5), np.float32)  # consistent itself, but d = 5, not 8
        cands[bad_nan] = cands[bad_nan].copy()
        cands[bad_nan][1, 1] = np.nan
        with pytest.raises(err) as info:
            select_batch(qs, cands, 4, device="cpu", threads=threads)
        assert str(info.value).startswith(where), info.value


def test_the_server_runs_a_batch_on_one_thread_unless_told() -> None:
    """A server's concurrent calls are its parallelism (like its BLAS cap): SelectBatch runs
    serially by default; ``--batch-threads 0`` means the CPUs this process may use."""
    import argparse

    from qdrant_sift.reranker._cmd_serve import add_arguments
    from qdrant_sift.reranker._server import build_server

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args([]).batch_threads == 1
    assert p.parse_args(["--batch-threads", "0"]).batch_threads == 0
    for given, want in ((1, 1), (None, _parallel.usable_cpus()), (3, 3)):
        handle = build_server(port=0, device="cpu", max_workers=1, batch_threads=given)
        try:
            assert handle.servicer._selector.threads == want
        finally:
            handle.stop(0)
    with pytest.raises(ConfigError, match="threads"):
        build_server(port=0, device="cpu", max_workers=1, batch_threads=-1)
