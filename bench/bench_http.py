"""HTTP rerank (Cohere v2 shape) on loopback: cold (embedding) vs warm (cached), against the same
work in-process and through gRPC, in the same run.

    .venv/bin/python bench/bench_http.py                 # the full table (idle machine: ~2 min)
    .venv/bin/python bench/bench_http.py --quick         # a directional look (< 1 min)

The server runs as its own process, as deployed: ``serve --http-port 0 --device cpu`` with the
default offline MiniLM, JSON logs at info, BLAS capped at one thread per call (``serve``'s
default), ``OMP_NUM_THREADS=1``. The task: rerank ``--n`` of ``--docs`` documents of ~100 words.

* **cold**: each of ``--cold-sets`` fresh document sets is sent once, so every text is embedded:
  half of them from 1 client, the other half from ``--threads`` clients at once;
* **warm**: one set, embeddings cached, ``--calls`` calls from 1 client and from ``--threads``
  clients. The body is encoded once (``content=``), as a client that reranks the same documents
  holds them; the "json= per call" row encodes the 200 documents on every call, as the SDKs do
  (client CPU, not server);
* **in-process**: ``LocalReranker.select`` on the vectors (the lower bound: no texts at all) and
  ``TextReranker.rerank`` on the texts with a warm cache (the same work as a warm HTTP call:
  hashing, cache, selection, scores), both capped like the server;
* **gRPC**: ``Select`` with the vectors (what a caller holding vectors pays) and
  ``RerankTexts`` (``RemoteReranker.rerank_texts``) with the texts.

Every HTTP and RerankTexts answer is checked against the in-process picks. Targets: warm HTTP
p50 (1 client) <= in-process select p50 + 2 ms; warm >= 10x faster than cold on CPU.
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
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from qdrant_sift.client.embed import default_embedder
from qdrant_sift.reranker import LocalReranker, RemoteReranker
from qdrant_sift.reranker._limits import Limits
from qdrant_sift.reranker._text import TextReranker

VOCAB = [
    "cat", "fur", "ring", "planet", "bread", "yeast", "river", "stone", "light", "wave", "market",
    "price", "engine", "wheel", "song", "note", "leaf", "root", "cloud", "rain", "glass", "paper",
]  # fmt: skip


def _pct(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, q))


def _run(fn: Callable[[int], Any], calls: int, threads: int) -> tuple[list[float], float]:
    """Latencies and calls/s of ``calls`` calls (call i gets ``i``) spread over ``threads``."""
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
    ap.add_argument("--cold-sets", type=int, default=16, help="fresh sets, each sent once")
    ap.add_argument("--calls", type=int, default=1000, help="warm calls per row")
    ap.add_argument("--threads", type=int, default=8, help="concurrent clients")
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="4 cold sets, 150 calls: directional")
    args = ap.parse_args()
    if args.quick:
        args.cold_sets, args.calls = 4, 150
    threadpool_limits(limits=1, user_api="blas")  # as the server caps itself
    rng = np.random.default_rng(0)
    words = args.docs * 100
    sets = [
        [" ".join(rng.choice(VOCAB, 100)) for _ in range(args.docs)]
        for _ in range(args.cold_sets + 1)
    ]
    queries = [" ".join(rng.choice(VOCAB, 8)) for _ in sets]
    warm = args.cold_sets  # the last set is the warm one
    half = args.cold_sets // 2
    proc, info = _start_server()
    url = f"http://127.0.0.1:{info['http_port']}/v2/rerank"
    rows: list[tuple[str, int, list[float], float | None]] = []
    bad = [0]

    def row(name: str, fn: Callable[[int], Any], clients: int, calls: int = args.calls) -> None:
        lat, tput = _run(fn, calls, clients)
        rows.append((name, clients, lat, tput if clients > 1 else None))

    try:
        emb = default_embedder("cpu")  # the warm set's vectors, as the server embeds them
        qvec, vecs = emb.embed_query(queries[warm]), emb.embed_documents(sets[warm])
        local = LocalReranker("cpu")
        want = local.select(qvec, vecs, args.n, unique=True).indices.tolist()
        cold_answers: dict[int, list[int]] = {}
        bodies = [
            json.dumps({"model": "sift", "query": q, "documents": s, "top_n": args.n}).encode()
            for q, s in zip(queries, sets, strict=True)
        ]
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.threads))
        headers = {"content-type": "application/json"}

        def http_set(k: int) -> None:
            got = client.post(url, content=bodies[k], headers=headers).json()["results"]
            picks = [r["index"] for r in got]
            if k == warm:
                bad[0] += picks != want
            else:  # cold: checked below against the same set once cached
                cold_answers[k] = picks

        def http_json(_: int) -> None:  # encodes the documents on every call, as SDKs do
            body = {"model": "sift", "query": queries[warm], "documents": sets[warm]}
            got = client.post(url, json={**body, "top_n": args.n}).json()["results"]
            bad[0] += [r["index"] for r in got] != want

        n8 = args.threads
        cold = f"HTTP cold (embeds {args.docs} texts)"
        row(cold, http_set, 1, half)  # sets 0..half-1
        row(f"HTTP cold, {n8} clients", lambda i: http_set(half + i), n8, args.cold_sets - half)
        for k, picks in list(cold_answers.items()):  # now cached: the same picks
            http_set(k)
            bad[0] += cold_answers[k] != picks
        for _ in range(20):
            http_set(warm)  # caches the warm set, warms connections
        row("HTTP warm (cached)", lambda _: http_set(warm), 1)
        row(f"HTTP warm, {n8} clients", lambda _: http_set(warm), n8)
        row("HTTP warm, json= per call (SDK-like)", http_json, 1)

        engine = TextReranker(local, Limits(), CollectorRegistry(), emb)
        engine.rerank(queries[warm], sets[warm], args.n)

        def texts(_: int) -> None:
            picks = engine.rerank(queries[warm], sets[warm], args.n).picks
            bad[0] += [p.index for p in picks] != want

        def select(_: int) -> None:
            local.select(qvec, vecs, args.n, unique=True)

        row("in-process select (vectors)", select, 1)
        row(f"in-process select, {n8} threads", select, n8)
        row("in-process TextReranker (texts, cached)", texts, 1)
        row(f"in-process TextReranker, {n8} threads", texts, n8)
        with RemoteReranker(f"grpc://127.0.0.1:{info['port']}", timeout=600) as remote:

            def grpc_select(_: int) -> None:
                remote.select(qvec, vecs, args.n, unique=True)

            def grpc_texts(_: int) -> None:
                picks = remote.rerank_texts(queries[warm], sets[warm], args.n).picks
                bad[0] += [p.index for p in picks] != want

            row("gRPC Select with vectors", grpc_select, 1)
            row(f"gRPC Select, {n8} clients", grpc_select, n8)
            row("gRPC RerankTexts (texts, cached)", grpc_texts, 1)
            row(f"gRPC RerankTexts, {n8} clients", grpc_texts, n8)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"\nK={args.docs} documents (~{words // args.docs} words each), n={args.n}, d={emb.dim}, "
          f"CPU, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"answers differing from the in-process picks: {bad[0]}\n")  # fmt: skip
    print("| path | clients | calls | p50 ms | p99 ms | calls/s |\n|---|---:|---:|---:|---:|---:|")
    for name, clients, lat, tput in rows:
        t = f"{tput:.3g}" if tput and tput < 100 else f"{tput:.0f}" if tput else ""
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        print(f"| {name} | {clients} | {len(lat)} | {p50:.2f} | {p99:.2f} | {t} |")
    by = {name: lat for name, _, lat, _ in rows}
    warm_p50 = _pct(by["HTTP warm (cached)"], 50)
    over_sel = warm_p50 - _pct(by["in-process select (vectors)"], 50)
    over_txt = warm_p50 - _pct(by["in-process TextReranker (texts, cached)"], 50)
    ratio = _pct(by[f"HTTP cold (embeds {args.docs} texts)"], 50) / warm_p50
    print(f"\nHTTP overhead at p50 (warm, 1 client): {over_sel:.2f} ms over in-process select on "
          f"vectors (target <= 2 ms), {over_txt:.2f} ms over the same text work in-process; "
          f"cold/warm p50: {ratio:.0f}x (target >= 10x)")  # fmt: skip


if __name__ == "__main__":
    main()
