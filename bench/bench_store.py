"""Store benchmark at 100k×384: ingest throughput and top-200-with-vectors recall latency.

Compares, in one run on the same seeded clustered data:
  * Qdrant Edge, exact (brute force, before ``optimize()``),
  * Qdrant Edge, HNSW (after ``optimize()``, default hnsw_ef = 2·k), with recall@200 vs exact,
  * qdrant-client local mode (``:memory:``; exact numpy search),
  * recall + SIFT (K=200, N=50) vs recall + nearest on the same Edge collection.

Prints a markdown table with ratios against targets. Run: ``python bench/bench_store.py``
(``--n 20000`` for a quick look). Takes a few minutes on 2 CPU cores (HNSW build dominates).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qdrant_sift.client.stores import EdgeStore, QdrantStore, VectorStore

K, N = 200, 50


def clustered(n: int, d: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points around random centres (cosine ~0.6 within a cluster); queries from the same law."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    q = centres[rng.integers(0, clusters, 64)] + 0.8 * rng.standard_normal((64, d)).astype(
        np.float32
    )
    return x, q


def ingest(store: VectorStore, x: np.ndarray, batch: int) -> float:
    store.create(x.shape[1])
    start = time.perf_counter()
    for a in range(0, len(x), batch):
        ids = list(range(a, min(a + batch, len(x))))
        store.upsert(ids, x[a : a + batch], [{"i": i} for i in ids])
    return time.perf_counter() - start


def timed(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[float, list[Any]]:
    """Median seconds per call (after one warm-up) and the results."""
    fn(queries[0])
    times, out = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, qs = clustered(args.n, args.dim, clusters=max(10, args.n // 1000), seed=args.seed)
    qs = qs[: args.queries]
    rows: list[tuple[str, str, str, str]] = []
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"data: {args.n}×{args.dim} clustered, {len(qs)} queries, K={K}", file=sys.stderr)
        edge = EdgeStore(tmp, "bench")
        res["edge_ingest"] = ingest(edge, x, 2000)
        print(f"edge ingest {res['edge_ingest']:.1f} s", file=sys.stderr)
        res["edge_exact"], exact = timed(lambda q: edge.recall(q, K), qs)
        res["edge_exact_1dir"], _ = timed(lambda q: edge.recall(q, K, both_directions=False), qs)

        local = QdrantStore("bench", location=":memory:")
        res["local_ingest"] = ingest(local, x, 5000)
        print(f"local-mode ingest {res['local_ingest']:.1f} s", file=sys.stderr)
        res["local"], local_out = timed(lambda q: local.recall(q, K), qs[: max(5, len(qs) // 2)])
        res["local_1dir"], _ = timed(
            lambda q: local.recall(q, K, both_directions=False), qs[: max(5, len(qs) // 2)]
        )
        same = np.mean([set(a.ids) == set(b.ids) for a, b in zip(local_out, exact, strict=False)])
        local.close()

        t = time.perf_counter()
        edge.optimize()
        res["optimize"] = time.perf_counter() - t
        print(f"HNSW build {res['optimize']:.1f} s", file=sys.stderr)
        res["edge_hnsw"], approx = timed(lambda q: edge.recall(q, K), qs)
        hits = [len(set(a.ids) & set(e.ids)) / K for a, e in zip(approx, exact, strict=True)]
        res["hnsw_recall"] = float(np.mean(hits))
        res["hnsw_recall_min"] = float(np.min(hits))

        sift_rows = bench_selection(edge, qs)
        edge.close()

    n = args.n
    rows += [
        ("Edge ingest (upsert, batches of 2000)", f"{res['edge_ingest']:.2f} s",
         f"{n / res['edge_ingest']:,.0f} pts/s", ""),
        ("local-mode ingest (:memory:, batches of 5000)", f"{res['local_ingest']:.2f} s",
         f"{n / res['local_ingest']:,.0f} pts/s",
         f"Edge {res['local_ingest'] / res['edge_ingest']:.1f}× faster"),
        ("Edge exact recall top-200 + vectors, both directions", ms(res["edge_exact"]), "", ""),
        ("Edge exact recall, one direction", ms(res["edge_exact_1dir"]), "", ""),
        ("local-mode recall top-200 + vectors, both directions", ms(res["local"]), "",
         f"Edge exact {res['local'] / res['edge_exact']:.1f}× faster (target ≥ 10×) "
         f"{ok(res['local'] / res['edge_exact'] >= 10)}"),
        ("local-mode recall, one direction", ms(res["local_1dir"]), "",
         f"Edge exact {res['local_1dir'] / res['edge_exact_1dir']:.1f}× faster"),
        ("local mode returns the exact candidate set", f"{same:.0%} of queries", "", ""),
        ("Edge HNSW build (optimize)", f"{res['optimize']:.1f} s", "", ""),
        ("Edge HNSW recall top-200 (hnsw_ef=400), both directions", ms(res["edge_hnsw"]), "",
         f"{res['edge_exact'] / res['edge_hnsw']:.1f}× faster than Edge exact"),
        ("Edge HNSW recall@200 vs exact", f"{res['hnsw_recall']:.4f}",
         f"min {res['hnsw_recall_min']:.3f}",
         f"target ≥ 0.95 {ok(res['hnsw_recall'] >= 0.95)}"),
    ]  # fmt: skip
    rows += sift_rows
    print(f"\n### Store benchmark: {n:,}×{args.dim}, K={K}, N={N}, median of {len(qs)} queries\n")
    print("| measurement | value | | vs baseline / target |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def bench_selection(edge: EdgeStore, qs: np.ndarray) -> list[tuple[str, str, str, str]]:
    try:
        import torch

        from qdrant_sift.reranker import select
    except ImportError as exc:
        return [("recall + SIFT vs recall + nearest", f"skipped: {exc}", "", "")]
    torch.set_num_threads(2)

    def pipeline(strategy: str) -> Callable[[np.ndarray], Any]:
        def run(q: np.ndarray) -> Any:
            cand = edge.recall(q, K)
            return select(q, cand.vectors, N, strategy=strategy)

        return run

    near, sift = pipeline("nearest"), pipeline("sift")
    near(qs[0]), sift(qs[0])  # warm both code paths once
    t_n: list[float] = []
    t_s: list[float] = []
    for rep in range(3):  # interleaved, so load from other processes hits both alike
        for q in qs:
            for fn, acc in ((near, t_n), (sift, t_s))[:: 1 if rep % 2 == 0 else -1]:
                t = time.perf_counter()
                fn(q)
                acc.append(time.perf_counter() - t)
    t_near, t_sift = statistics.median(t_n), statistics.median(t_s)
    ratio = t_sift / t_near
    return [
        ("recall (HNSW) + nearest (N=50), interleaved ×3", ms(t_near), "", ""),
        ("recall (HNSW) + SIFT (K=200, N=50)", ms(t_sift), "",
         f"{ratio:.2f}× recall + nearest (target ≤ 1.25×) {ok(ratio <= 1.25)}"),
    ]  # fmt: skip


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def ok(flag: bool) -> str:
    return "✅" if flag else "❌"


if __name__ == "__main__":
    sys.exit(main())
