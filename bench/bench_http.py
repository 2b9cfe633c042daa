"""HTTP rerank (Cohere v2 shape) on loopback: cold (embedding) vs warm (cached), against the same
work in-process and through gRPC, in the same run.

    .venv/bin/python bench/bench_http.py                 # the full table (idle machine: ~3 min)
    .venv/bin/python bench/bench_http.py --quick         # a directional look (~1 min)

The server runs as its own process, as deployed: ``serve --http-port 0 --device cpu`` with the
default offline MiniLM, JSON logs at info (to a file, as a container runtime collects them; a
pipe read by this process would wake one of its threads on every request), BLAS capped at one
thread per call (``serve``'s default), ``OMP_NUM_THREADS=1``. The task: rerank ``--n`` of
``--docs`` documents of ~100 words.

* **cold**: each of ``--cold-sets`` fresh document sets is sent once, so every text is embedded:
  half of them from 1 client, the other half from ``--threads`` clients at once;
* **warm**: one set, embeddings cached, ``--calls`` calls per row. Two real clients, each with a
  keep-alive pool: ``httpx`` (the transport of the ``cohere`` SDK, LangChain's and LlamaIndex's
  Cohere rerankers and LiteLLM) and ``urllib3`` (the transport of ``requests``: Haystack's TEI
  ranker). The body is encoded once (``content=``), as a client that reranks the same documents
  holds them; the "json= per call" row encodes the 200 documents on every call, as the SDKs do;
* **in-process**: ``LocalReranker.select`` on the vectors (no texts at all) and
  ``TextReranker.rerank`` on the texts with a warm cache (the same work as a warm HTTP call:
  hashing, cache lookups, checks, selection, scores), both capped like the server;
* **gRPC**: ``Select`` with the vectors (what a caller holding vectors pays) and
  ``RerankTexts`` (``RemoteReranker.rerank_texts``) with the texts.

The 1-client warm rows (both HTTP clients and both in-process paths) run in blocks of 50 calls
in turn, so that other load on a shared machine hits them alike. Server and client CPU per call
come from ``/proc`` (server process) and the calling thread's CPU clock. Every HTTP and
RerankTexts answer is checked against the in-process picks. Targets: warm HTTP p50 (1 client)
<= in-process p50 of the same work + 2 ms; warm >= 10x faster than cold on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import urllib3
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from qdrant_sift.client.embed import default_embedder
from qdrant_sift.options import RERANK_DEFAULTS as RERANK  # what /v2/rerank selects with
from qdrant_sift.reranker import Limits, LocalReranker, RemoteReranker, TextReranker

VOCAB = [
    "cat", "fur", "ring", "planet", "bread", "yeast", "river", "stone", "light", "wave", "market",
    "price", "engine", "wheel", "song", "note", "leaf", "root", "cloud", "rain", "glass", "paper",
]  # fmt: skip


HTTPX = "HTTP warm (cached), httpx"
URLLIB3 = "HTTP warm (cached), urllib3"
SELECT = "in-process select (vectors)"
TEXTS = "in-process TextReranker (texts, cached)"


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


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(log: Any) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """``serve`` with its JSON logs going to the file ``log`` (a pipe read by a thread of this
    process would wake that thread on every request and take the GIL from the clients)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdrant_sift.client.cli", "serve", "--host", "127.0.0.1",
         "--port", "0", "--http-port", "0", "--device", "cpu"],
        stderr=log, stdout=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    with open(log.name) as lines:
        while time.monotonic() < deadline and proc.poll() is None:
            line = lines.readline()
            if not line.endswith("\n"):
                time.sleep(0.05)
                lines.seek(lines.tell() - len(line))
                continue
            if line.startswith("{") and (rec := json.loads(line)).get("msg") == "listening":
                return proc, rec
    raise RuntimeError(f"the server did not start; its log: {log.name}")


def _interleaved(
    fns: list[Callable[[int], Any]], calls: int, pid: int, block: int = 50
) -> list[tuple[list[float], float, float]]:
    """``calls`` calls of each of ``fns`` in blocks: ``block`` calls of the first, ``block`` of
    the next, ..., then again, so that a load that comes and goes over the run hits every row
    alike while each block still runs back to back (hot, as a loop of one path would). Per fn:
    latencies, server CPU and client CPU per call."""
    lat: list[list[float]] = [[] for _ in fns]
    server, client = [0.0] * len(fns), [0.0] * len(fns)
    for start in range(0, calls, block):
        for j, fn in enumerate(fns):
            s0, c0 = _cpu(pid), time.thread_time()
            for i in range(start, min(start + block, calls)):
                t0 = time.perf_counter()
                fn(i)
                lat[j].append(time.perf_counter() - t0)
            client[j] += time.thread_time() - c0
            server[j] += _cpu(pid) - s0
    return [(lat[j], server[j] / calls, client[j] / calls) for j in range(len(fns))]


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
    log = tempfile.NamedTemporaryFile("w", prefix="bench_http-", suffix=".log", delete=False)  # noqa: SIM115
    proc, info = _start_server(log)
    url = f"http://127.0.0.1:{info['http_port']}/v2/rerank"
    rows: list[tuple[str, int, list[float], float | None, float, float]] = []
    bad = [0]

    def row(name: str, fn: Callable[[int], Any], clients: int, calls: int = args.calls) -> None:
        s0, c0 = _cpu(proc.pid), time.process_time()
        lat, tput = _run(fn, calls, clients)
        server, client = _cpu(proc.pid) - s0, time.process_time() - c0
        rows.append((name, clients, lat, tput if clients > 1 else None, server / calls,
                     client / calls))  # fmt: skip

    try:
        emb = default_embedder("cpu")  # the warm set's vectors, as the server embeds them
        qvec, vecs = emb.embed_query(queries[warm]), emb.embed_documents(sets[warm])
        local = LocalReranker("cpu")
        want = local.select(qvec, vecs, args.n, unique=True, lam=RERANK.lam).indices.tolist()
        cold_answers: dict[int, list[int]] = {}
        bodies = [
            json.dumps({"model": "sift", "query": q, "documents": s, "top_n": args.n}).encode()
            for q, s in zip(queries, sets, strict=True)
        ]
        client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.threads))
        pool = urllib3.PoolManager(maxsize=args.threads, timeout=600)
        headers = {"content-type": "application/json"}

        def http_set(k: int) -> None:
            got = client.post(url, content=bodies[k], headers=headers).json()["results"]
            picks = [r["index"] for r in got]
            if k == warm:
                bad[0] += picks != want
            else:  # cold: checked below against the same set once cached
                cold_answers[k] = picks

        def urllib3_warm(_: int) -> None:
            got = json.loads(pool.request("POST", url, body=bodies[warm], headers=headers).data)
            bad[0] += [r["index"] for r in got["results"]] != want

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
        engine = TextReranker(local, Limits(), CollectorRegistry(), emb)

        def texts(_: int) -> None:
            picks = engine.rerank(queries[warm], sets[warm], args.n).picks
            bad[0] += [p.index for p in picks] != want

        def select(_: int) -> None:
            local.select(qvec, vecs, args.n, unique=True, lam=RERANK.lam)

        for _ in range(20):  # caches the warm set, warms connections and code paths
            http_set(warm)
            urllib3_warm(0)
            texts(0)
        # 1 client: both HTTP clients and the same work in-process, in blocks (_interleaved)
        one = {HTTPX: lambda _: http_set(warm), URLLIB3: urllib3_warm, SELECT: select, TEXTS: texts}
        measured = _interleaved(list(one.values()), args.calls, proc.pid)
        for name, (lat, server, cpu) in zip(one, measured, strict=True):
            rows.append((name, 1, lat, None, server, cpu))
        row(f"HTTP warm, {n8} clients (httpx)", lambda _: http_set(warm), n8)
        row(f"HTTP warm, {n8} clients (urllib3)", urllib3_warm, n8)
        row("HTTP warm, json= per call (httpx, SDK-like)", http_json, 1)
        row(f"in-process select, {n8} threads", select, n8)
        row(f"in-process TextReranker, {n8} threads", texts, n8)
        with RemoteReranker(f"grpc://127.0.0.1:{info['port']}", timeout=600) as remote:

            def grpc_select(_: int) -> None:
                remote.select(qvec, vecs, args.n, unique=True, lam=RERANK.lam)

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
    print("| path | clients | calls | p50 ms | p99 ms | calls/s | server CPU ms/call | "
          "client CPU ms/call |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name, clients, lat, tput, server, client in rows:
        t = f"{tput:.3g}" if tput and tput < 100 else f"{tput:.0f}" if tput else ""
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        srv = "" if name.startswith("in-process") else f"{server * 1e3:.2f}"
        print(f"| {name} | {clients} | {len(lat)} | {p50:.2f} | {p99:.2f} | {t} | {srv} | "
              f"{client * 1e3:.2f} |")  # fmt: skip
    p50 = {name: _pct(lat, 50) for name, _, lat, _, _, _ in rows}
    print("\nHTTP overhead at p50, warm, 1 client (target <= 2 ms over the same work in-process):")
    for name in (HTTPX, URLLIB3):
        print(f"  {name}: {p50[name] - p50[TEXTS]:.2f} ms over the same text work in-process "
              f"(hashing, cache, selection, scores); {p50[name] - p50[SELECT]:.2f} ms over "
              "select on the vectors alone")  # fmt: skip
    ratio = p50[f"HTTP cold (embeds {args.docs} texts)"] / p50[HTTPX]
    print(f"cold/warm p50 (httpx): {ratio:.0f}x (target >= 10x); server log: {log.name}")


if __name__ == "__main__":
    main()
