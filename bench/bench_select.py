"""Benchmark of the SIFT selector: agreement with activeft, latency ratios, memory.

Prints one markdown table (scenario, ours, baseline, ratio, target, pass/fail); every ratio is
measured in this run against a baseline timed in this run, so machine speed cancels out. Each
pair of contenders is timed wall-clock around one call each, the same number of repetitions,
alternating which goes first (activeft's whole ``Retriever.search`` against our ``select`` on the
same K candidates; its own SIFT timer is shown beside it). The load average is printed at start
and end: ratios from a loaded machine are not results (activeft slows down more under load).

    python bench/bench_select.py [--quick] [--device cpu|cuda] [--threads 1]
                                 [--activeft-path DIR]

The activeft rows need ``activeft==0.1.1`` and ``faiss-cpu`` importable (install them for the
benchmark only, e.g. ``pip install --no-deps --target /tmp/aft activeft==0.1.1 faiss-cpu`` and pass
``--activeft-path /tmp/aft``); without them those rows say "skipped" and why.
``--threads`` caps BLAS/OpenMP threads for every contender alike (set before numpy/torch load);
the default 1 gives stable numbers on a small shared machine. It is not the batch's thread
count: ``select_batch`` runs a CPU batch's prompts on as many threads as the process may use
(printed in the header; each keeps BLAS on one thread), and a row shows the same batch on one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

IDLE_RUN = """\
exact commands for the idle-machine run (2 CPUs, nothing else running; `uptime` load < 0.3):

  # benchmark-only baselines, once (activeft's exact SIFT and the faiss it imports):
  pip install --no-deps --target /tmp/t15_bench activeft==0.1.1 faiss-cpu
  # the table (agreement and latency vs activeft at d=768, SIFT alone at K=200 N=50 d=384,
  # nearest reporting baseline, K=10k mat-vec bound, memory, batch of 64 vs single calls):
  .venv/bin/python bench/bench_select.py --activeft-path /tmp/t15_bench
  # about a minute, fewer repetitions:
  .venv/bin/python bench/bench_select.py --quick --activeft-path /tmp/t15_bench
"""


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=IDLE_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (0: leave)")
    ap.add_argument("--activeft-path", default=None, help="folder holding activeft and faiss")
    return ap.parse_args()


ARGS = _args()
if ARGS.threads > 0:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
if ARGS.activeft_path:
    sys.path.insert(0, ARGS.activeft_path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from qdrant_sift.reranker import LocalReranker, select, select_batch  # noqa: E402

if ARGS.threads > 0:
    torch.set_num_threads(ARGS.threads)

ROWS: list[tuple[str, str, str, str, str, str]] = []
BATCH_THREADS = LocalReranker(device="cpu").threads  # select_batch's default (threads=None)
DEV = ARGS.device
REPEATS = 3 if ARGS.quick else 11


def _sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _alternating_ms(
    a: Callable[[], Any], b: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median ms of each, one call per repetition, the order of the two swapped every time."""
    a(), b()
    _sync()
    ta: list[float] = []
    tb: list[float] = []
    for rep in range(repeats):
        pair = ((a, ta), (b, tb))
        for fn, acc in pair if rep % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            fn()
            _sync()
            acc.append(time.perf_counter() - t0)
    return float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3


def _after_idle_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median ms of one call after 20 ms asleep: what a call costs with caches, TLB and branch
    predictors left to whatever ran meanwhile (other processes; in the interleaved rows, the
    baseline). Info only: it shows how much of an interleaved time is a cold start rather than
    the contender's own work (no allocation: a select call takes 0.04 page faults)."""
    fn()
    times = []
    for _ in range(repeats):
        time.sleep(0.02)
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _faults_after(before: Callable[[], Any] | None, fn: Callable[[], Any]) -> float:
    """Mean minor page faults of ``fn`` right after ``before`` (untimed; info only). activeft's
    ``Retriever.search`` forks a torch DataLoader worker per call; after a fork every page the
    parent writes first takes a copy-on-write fault, in numpy's BLAS packing buffers and the
    interpreter's objects as much as in ours. This shows how much of the interleaved time that
    is (each fault costs one to two microseconds here)."""
    import resource

    total = 0
    for _ in range(5):
        if before is not None:
            before()
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        total += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    return total / 5


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _row(scenario: str, ours: str, base: str, ratio: str, target: str, ok: bool | None) -> None:
    verdict = ("info" if target == "-" else "skipped") if ok is None else ("pass" if ok else "FAIL")
    ROWS.append((scenario, ours, base, ratio, target, verdict))


def _activeft() -> tuple[Any, Any] | str:
    try:
        import faiss
        from activeft.sift import Retriever
    except Exception as exc:  # not installed: the rows say so
        return f"activeft/faiss not importable ({type(exc).__name__}: {exc})"
    return faiss, Retriever


def bench_activeft() -> None:
    K, N, d = 200, 50, 768
    rng = np.random.default_rng(0)
    X = _unit(rng, (K, d))
    q = _unit(rng, (1, d))
    aft = _activeft()
    if isinstance(aft, str):
        for lam in (0.01, 0.1, 1.0):
            _row(f"agreement with activeft, λ={lam}", "-", "-", "-", "same picks, Δ≤1e-4", None)
        _row(f"latency K={K} N={N} d={d} vs activeft exact", "-", aft, "-", "≥150×", None)
        return
    faiss, Retriever = aft
    index = faiss.IndexFlatIP(d)
    index.add(X)
    aft_device = torch.device(DEV)
    for lam in (0.01, 0.1, 1.0):
        retriever = Retriever(index, llambda=lam, also_query_opposite=False, device=aft_device)
        values, idx, _, _ = retriever.search(q, N=N, K=K)
        sel = select(q, X, N, lam=lam, device=DEV)
        same = int(np.sum(np.asarray(idx) == sel.indices))
        delta = float(np.max(np.abs(-np.asarray(values, np.float64) - sel.variances)))
        _row(
            f"agreement with activeft, λ={lam} (K={K} N={N} d={d})",
            f"{same}/{N} picks equal",
            f"max abs Δσ² = {delta:.1e}",
            "-",
            "same picks, Δ≤1e-4",
            same == N and delta <= 1e-4,
        )
    retriever = Retriever(index, llambda=0.01, also_query_opposite=False, device=aft_device)
    own: list[float] = []

    def aft_call() -> None:  # its whole call: faiss over the K candidates, then exact SIFT
        own.append(retriever.search(q, N=N, K=K)[3].sift)

    def ours_call() -> None:  # the same job: the K candidates in, N picks out
        select(q, X, N, device=DEV)

    # both wall-clock, one call each, the same number of repetitions, alternating which goes
    # first, so load changes on a shared machine hit both alike
    aft_ms, ours_ms = _alternating_ms(aft_call, ours_call, 10 if ARGS.quick else 30)
    ratio = aft_ms / ours_ms
    warm = _median_ms(ours_call, 50)  # info: right after an activeft call ours runs colder
    idle = _after_idle_ms(ours_call, 20)
    search = lambda: retriever.search(q, N=N, K=K)  # noqa: E731 (aft_call minus its timer)
    after, alone = _faults_after(search, ours_call), _faults_after(None, ours_call)
    _row(
        f"latency K={K} N={N} d={d} vs activeft exact (wall clock, same calls, interleaved)",
        f"{ours_ms:.3f} ms (back-to-back: {warm:.3f} ms; after 20 ms asleep: {idle:.3f} ms; "
        f"page faults per call: {after:.0f} after an activeft call, {alone:.0f} back-to-back)",
        f"{aft_ms:.1f} ms (its own SIFT timer: {float(np.median(own)) * 1e3:.1f} ms)",
        f"{ratio:.0f}× faster",
        "≥150×",
        ratio >= 150,
    )


def bench_small_k() -> None:
    """SIFT alone at the SIFT-search shape (K=200, N=50, d=384) against a plain top-50."""
    K, N, d = 200, 50, 384
    rng = np.random.default_rng(4)
    X = _unit(rng, (K, d))
    q = _unit(rng, (d,))

    def ours_call() -> None:
        select(q, X, N, device=DEV)

    def top_n() -> None:  # what nearest neighbours cost on the same candidates
        np.argpartition(-(X @ q), N)[:N]

    ours, base = _alternating_ms(ours_call, top_n, 10 * REPEATS)
    idle = _after_idle_ms(ours_call, 20)
    _row(
        f"SIFT alone K={K} N={N} d={d} (absolute)",
        f"{ours:.3f} ms (after 20 ms asleep: {idle:.3f} ms)",
        f"{base:.3f} ms (numpy top-{N} of the same {K})",
        f"{ours / base:.1f}×",
        "≤0.4 ms",
        ours <= 0.4,
    )
    from qdrant_sift.reranker import compiled_available

    if compiled_available():  # what the compiled pick loop buys, same calls, interleaved

        def numpy_loop() -> None:
            os.environ["QDRANT_SIFT_NUMBA"] = "0"
            try:
                select(q, X, N, device=DEV)
            finally:
                del os.environ["QDRANT_SIFT_NUMBA"]

        ours, base = _alternating_ms(ours_call, numpy_loop, 10 * REPEATS)
        _row(
            f"SIFT alone K={K} N={N} d={d}: compiled pick loop vs numpy loop (info)",
            f"{ours:.3f} ms",
            f"{base:.3f} ms (QDRANT_SIFT_NUMBA=0)",
            f"{ours / base:.2f}×",
            "-",
            None,
        )
    # select(strategy="nearest") is a reporting baseline (NN picks scored on SIFT's objective),
    # not the cost of nearest neighbours; its fast path keeps it O(K·d) + one n×n factor
    for k in (K, 10_000):
        Xk = X if k == K else _unit(rng, (k, d))

        def near_call(Xk: np.ndarray = Xk) -> None:
            select(q, Xk, N, strategy="nearest", device=DEV)

        def top(Xk: np.ndarray = Xk) -> None:
            np.argpartition(-(Xk @ q), N)[:N]

        near, base = _alternating_ms(near_call, top, 10 * REPEATS if k == K else 3 * REPEATS)
        _row(
            f"select(strategy='nearest') K={k} N={N} d={d}: reporting baseline, variances incl.",
            f"{near:.3f} ms",
            f"{base:.3f} ms (numpy top-{N})",
            f"{near / base:.1f}×",
            "-",
            None,
        )


def bench_matvec_bound() -> None:
    K, N, d = 10_000, 50, 768
    rng = np.random.default_rng(1)
    X = rng.standard_normal((K, d)).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    picks = rng.integers(0, K, N)
    if DEV == "cuda":
        Xd = torch.from_numpy(X).cuda()

        def matvecs() -> None:
            for j in picks:
                Xd @ Xd[int(j)]

        def ours_call() -> None:
            select(q, Xd, N, device=DEV)
    else:

        def matvecs() -> None:
            for j in picks:
                X @ X[j]

        def ours_call() -> None:
            select(q, X, N, device=DEV)

    ours, base = _alternating_ms(ours_call, matvecs, REPEATS)
    ratio = ours / base
    _row(
        f"K={K} N={N} d={d} vs {N} plain K×d mat-vecs",
        f"{ours:.2f} ms",
        f"{base:.2f} ms",
        f"{ratio:.2f}×",
        "≤1.5×",
        ratio <= 1.5,
    )


def bench_memory() -> None:
    K, N, d = 100_000, 50, 384
    rng = np.random.default_rng(2)
    X = rng.standard_normal((K, d)).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    if DEV == "cuda":
        Xd = torch.from_numpy(X).cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        select(q, Xd, N, device=DEV)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        extra = torch.cuda.max_memory_allocated() - base
        how = "CUDA peak allocated"
    else:
        tracemalloc.start()
        t0 = time.perf_counter()
        select(q, X, N, device=DEV)
        secs = time.perf_counter() - t0
        extra = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        how = "tracemalloc peak"
    total = X.nbytes + extra
    ratio = total / X.nbytes
    _row(
        f"K={K} N={N} d={d} peak memory ({how}, {secs:.2f} s)",
        f"{total / 2**20:.0f} MiB incl. input",
        f"input {X.nbytes / 2**20:.0f} MiB",
        f"{ratio:.2f}×",
        "≤2×",
        ratio <= 2.0,
    )


def _batch_ceiling(
    queries: list[np.ndarray], cands: list[np.ndarray], n: int, singles: Callable[[], None]
) -> None:
    """What this machine allows a batch of these prompts: the very single calls split in halves
    over plain threads, one per CPU the batch may use (no checks first, no pool), against the
    same calls on one thread. A per-prompt batch does each prompt's own work (its kernel rows),
    so its ratio cannot beat this one; where the CPUs share a core's units (vCPUs on SMT
    siblings) it stays well above 1/threads. Also what a user could run instead of
    ``select_batch``."""
    import threading

    pairs = list(zip(queries, cands, strict=True))
    parts = [pairs[t::BATCH_THREADS] for t in range(BATCH_THREADS)]

    def run(part: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for q, c in part:
            select(q, c, n, device="cpu")

    def threaded() -> None:
        helpers = [threading.Thread(target=run, args=(p,)) for p in parts[1:]]
        for h in helpers:
            h.start()
        run(parts[0])
        for h in helpers:
            h.join()

    single_ms, split_ms = _alternating_ms(singles, threaded, REPEATS)
    B = len(pairs)
    _row(
        f"64 single calls split over {BATCH_THREADS} plain threads, per prompt: this machine's "
        "ceiling for the batch row above (info)",
        f"{split_ms / B:.3f} ms",
        f"{single_ms / B:.3f} ms (64 single calls)",
        f"{split_ms / single_ms:.2f}×",
        "-",
        None,
    )


def bench_batch() -> None:
    B, K, N, d = 64, 200, 50, 384
    rng = np.random.default_rng(3)
    queries = [rng.standard_normal(d).astype(np.float32) for _ in range(B)]
    cands = [rng.standard_normal((K, d)).astype(np.float32) for _ in range(B)]
    if DEV == "cuda":
        cands = [torch.from_numpy(c).cuda() for c in cands]

    def singles() -> None:
        for q, c in zip(queries, cands, strict=True):
            select(q, c, N, device=DEV)

    def batch() -> None:  # the default: as many threads as this process may use
        select_batch(queries, cands, N, device=DEV)

    def batch_1() -> None:  # the same batch on the caller's thread alone
        select_batch(queries, cands, N, device=DEV, threads=1)

    # alternate the two so load changes on a shared machine hit both alike; a single call
    # uses one thread, so the baseline stays 64 single calls on one thread
    single_ms, batch_ms = _alternating_ms(singles, batch, REPEATS)
    single_ms, batch_ms = single_ms / B, batch_ms / B
    ratio = batch_ms / single_ms
    _row(
        f"batch of {B} prompts K={K} N={N} d={d}, per prompt ({BATCH_THREADS} threads)",
        f"{batch_ms:.3f} ms",
        f"{single_ms:.3f} ms (64 single calls)",
        f"{ratio:.2f}×",
        "≤0.5×",
        ratio <= 0.5,
    )
    single_ms, one_ms = _alternating_ms(singles, batch_1, REPEATS)
    single_ms, one_ms = single_ms / B, one_ms / B
    _row(
        f"batch of {B} prompts K={K} N={N} d={d}, per prompt, threads=1 (info)",
        f"{one_ms:.3f} ms",
        f"{single_ms:.3f} ms (64 single calls)",
        f"{one_ms / single_ms:.2f}×",
        "-",
        None,
    )
    if DEV == "cpu":
        _batch_ceiling(queries, cands, N, singles)
    shared = cands[0]
    shared_ms = _median_ms(lambda: select_batch(queries, shared, N, device=DEV), 3 * REPEATS) / B
    _row(
        f"batch of {B} prompts, one shared K={K} set (info)",
        f"{shared_ms:.3f} ms",
        f"{single_ms:.3f} ms (single calls)",
        f"{shared_ms / single_ms:.2f}×",
        "-",
        None,
    )


def _version(module: str) -> str:
    import importlib

    return str(getattr(importlib.import_module(module), "__version__", "?"))


def main() -> int:
    from qdrant_sift.reranker import compiled_available

    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    loop = "numba " + _version("numba") if compiled_available() else "numpy (numba not installed)"
    print(
        f"device={DEV} threads={ARGS.threads or 'default'} torch={torch.__version__} "
        f"repeats={REPEATS} pick loop: {loop}; batch threads (select_batch default) "
        f"{BATCH_THREADS}; load average at start {load} on {os.cpu_count()} CPUs\n"
    )
    for fn in (bench_activeft, bench_small_k, bench_matvec_bound, bench_memory, bench_batch):
        fn()
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average at end {load} (1/5/15 min): a loaded machine's numbers are not results\n")
    print("| scenario | ours | baseline | ratio | target | pass/fail |")
    print("|---|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    return 1 if any(r[5] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
