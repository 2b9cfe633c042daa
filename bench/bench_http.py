"""HTTP rerank (Cohere v2 shape) on loopback: cold (embedding) vs warm (cached), against the same
selection in-process and through gRPC ``Select`` with vectors, in the same run.

    .venv/bin/python bench/bench_http.py [--sets 4 --calls 400 --threads 8 --docs 200 --n 50]

The server runs as its own process with the default offline MiniLM (``serve --http-port 0``).
Each of ``--sets`` document sets (``--docs`` texts of ~100 words) is sent once cold (every text
embedded), then ``--calls`` times warm (every text cached). The in-process and gRPC rows select
on the very vectors the server embeds (MiniLM here too), and every HTTP answer is checked
against the in-process picks. Targets: warm HTTP p50 <= in-process p50 + 2 ms; warm >= 10x
faster than cold on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from qdrant_sift.client.embed import default_embedder
from qdrant_sift.reranker import LocalReranker, RemoteReranker

VOCAB = [
    "cat", "fur", "ring", "planet", "bread", "yeast", "river", "stone", "light", "wave", "market",
    "price", "engine", "wheel", "song", "note", "leaf", "root", "cloud", "rain", "glass", "paper",
]  # fmt: skip


def _pct(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, q))


def _run(fn: Callable[[int], Any], calls: int, threads: int) -> tuple[list[float], float]:
    """Latencies and calls/s of ``calls`` calls spread over ``threads`` threads."""
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker() -> None:
        mine = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            s = time.perf_counter()
            fn(i)
            mine.append(time.perf_counter() - s)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return lat, calls / (time.perf_counter() - t0)


def _start_server() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdrant_sift.reranker._cmd_serve", "--host", "127.0.0.1",
         "--port", "0", "--http-port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or ()], daemon=True).start()
    while True:
        line = lines.get(timeout=600)
        if line.startswith("{") and (rec := json.loads(line)).get("msg") == "listening":
            return proc, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sets = [[" ".join(rng.choice(VOCAB, 100)) for _ in range(args.docs)] for _ in range(args.sets)]
    queries = [" ".join(rng.choice(VOCAB, 8)) for _ in range(args.sets)]
    proc, info = _start_server()
    url = f"http://127.0.0.1:{info['http_port']}/v2/rerank"
    try:
        emb = default_embedder("cpu")
        vecs = [emb.embed_documents(s) for s in sets]
        qvecs = [emb.embed_query(q) for q in queries]
        local = LocalReranker("cpu")
        want = [local.select(qvecs[i], vecs[i], args.n, unique=True).indices.tolist()
                for i in range(args.sets)]  # fmt: skip
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.threads))
        bad = [0]

        def http(i: int) -> None:
            k = i % args.sets
            body = {"model": "sift", "query": queries[k], "documents": sets[k], "top_n": args.n}
            got = [r["index"] for r in client.post(url, json=body).json()["results"]]
            bad[0] += got != want[k]

        cold, _ = _run(http, args.sets, 1)  # each set once: every text embedded
        warm_seq, _ = _run(http, args.calls, 1)
        warm_lat, warm_tput = _run(http, args.calls, args.threads)

        def on(selector: Any) -> Callable[[int], Any]:
            k = args.sets
            return lambda i: selector.select(qvecs[i % k], vecs[i % k], args.n, unique=True)

        inproc = _run(on(local), args.calls, 1)
        inproc_tput = _run(on(local), args.calls, args.threads)
        with RemoteReranker(f"grpc://127.0.0.1:{info['port']}") as remote:
            grpc_seq = _run(on(remote), args.calls, 1)
            grpc_tput = _run(on(remote), args.calls, args.threads)
    finally:
        proc.terminate()
        proc.wait(60)
    rows = [
        ("HTTP cold (embed 200 texts)", cold, None),
        ("HTTP warm (cached), 1 client", warm_seq, None),
        (f"HTTP warm, {args.threads} clients", warm_lat, warm_tput),
        ("in-process select, 1 thread", inproc[0], None),
        (f"in-process select, {args.threads} threads", inproc_tput[0], inproc_tput[1]),
        ("gRPC Select with vectors, 1 client", grpc_seq[0], None),
        (f"gRPC Select, {args.threads} clients", grpc_tput[0], grpc_tput[1]),
    ]
    print(f"\nK={args.docs}, n={args.n}, d={emb.dim}, load {os.getloadavg()[0]:.1f}, "
          f"mismatched HTTP answers: {bad[0]}\n")  # fmt: skip
    print("| path | p50 ms | p99 ms | calls/s |\n|---|---:|---:|---:|")
    for name, lat, tput in rows:
        t = f"{tput:.0f}" if tput else ""
        print(f"| {name} | {_pct(lat, 50):.2f} | {_pct(lat, 99):.2f} | {t} |")
    over = _pct(warm_seq, 50) - _pct(inproc[0], 50)
    ratio = _pct(cold, 50) / _pct(warm_seq, 50)
    print(f"\nHTTP overhead over in-process at p50 (warm): {over:.2f} ms (target <= 2 ms); "
          f"cold/warm p50: {ratio:.0f}x (target >= 10x)")  # fmt: skip


if __name__ == "__main__":
    main()
