"""Benchmark of the SIFT selector: agreement with activeft, latency ratios, memory.

Prints one markdown table (scenario, ours, baseline, ratio, target, pass/fail); every ratio is
measured in this run against a baseline timed in this run, so machine speed cancels out.

    python bench/bench_select.py [--quick] [--device cpu|cuda] [--threads 1]
                                 [--activeft-path DIR]

The activeft rows need ``activeft==0.1.1`` and ``faiss-cpu`` importable (install them for the
benchmark only, e.g. ``pip install --no-deps --target /tmp/aft activeft==0.1.1 faiss-cpu`` and pass
``--activeft-path /tmp/aft``); without them those rows say "skipped" and why.
``--threads`` caps BLAS/OpenMP threads for every contender alike (set before numpy/torch load);
the default 1 gives stable numbers on a small shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

from qdrant_sift.reranker import select, select_batch  # noqa: E402

if ARGS.threads > 0:
    torch.set_num_threads(ARGS.threads)

ROWS: list[tuple[str, str, str, str, str, str]] = []
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
    a(), b()
    _sync()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            _sync()
            acc.append(time.perf_counter() - t0)
    return float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3


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
        _row(f"latency K={K} N={N} d={d} vs activeft exact", "-", aft, "-", "≥100×", None)
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

    def aft_call() -> float:
        return retriever.search(q, N=N, K=K)[3].sift  # its own SIFT time, faiss excluded

    def ours_call() -> None:
        select(q, X, N, device=DEV)

    # alternate the two (one activeft call, then a block of ours) so load changes on a shared
    # machine hit both alike
    aft_call(), ours_call()
    aft_s, ours_s = [], []
    for _ in range(REPEATS):
        aft_s.append(aft_call())
        ours_s.append(_median_ms(ours_call, 50) / 1e3)
    aft_ms, ours_ms = float(np.median(aft_s)) * 1e3, float(np.median(ours_s)) * 1e3
    ratio = aft_ms / ours_ms
    _row(
        f"latency K={K} N={N} d={d} vs activeft exact",
        f"{ours_ms:.3f} ms",
        f"{aft_ms:.1f} ms",
        f"{ratio:.0f}× faster",
        "≥100×",
        ratio >= 100,
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

    def batch() -> None:
        select_batch(queries, cands, N, device=DEV)

    # alternate the two so load changes on a shared machine hit both alike
    single_ms, batch_ms = _alternating_ms(singles, batch, REPEATS)
    single_ms, batch_ms = single_ms / B, batch_ms / B
    ratio = batch_ms / single_ms
    _row(
        f"batch of {B} prompts K={K} N={N} d={d}, per prompt",
        f"{batch_ms:.3f} ms",
        f"{single_ms:.3f} ms (64 single calls)",
        f"{ratio:.2f}×",
        "≤0.5×",
        ratio <= 0.5,
    )
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


def main() -> int:
    print(
        f"device={DEV} threads={ARGS.threads or 'default'} torch={torch.__version__} "
        f"repeats={REPEATS}\n"
    )
    for fn in (bench_activeft, bench_matvec_bound, bench_memory, bench_batch):
        fn()
    print("| scenario | ours | baseline | ratio | target | pass/fail |")
    print("|---|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    return 1 if any(r[5] == "FAIL" for r in ROWS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
