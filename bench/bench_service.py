"""Load test of the gRPC reranker on loopback, next to in-process selection in the same run.

    .venv/bin/python bench/bench_service.py [--calls 2000 --threads 8 --k 200 --d 384 --n 50]

The server runs as its own process (``qdrant-sift serve`` via ``python -m
qdrant_sift.client.cli``), as deployed; the client threads run here. Same candidate sets for both
paths, and every remote answer is checked against the in-process picks (a mismatch counts as an
error). Bytes on the wire are counted by a loopback TCP relay (both directions, per call) and
compared with the raw float32 payload (query + candidates in, indices + variances out). Both
processes cap BLAS at one thread per call (the server's ``--blas-threads 1`` default): concurrent
calls are the parallelism.
Targets on 2 cores: sequential p50 <= in-process p50 + 1.5 ms, >= 300 calls/s under load.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qdrant_sift.reranker import LocalReranker, RemoteReranker


def _pct(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, q))


def _sequential(fn: Callable[[int], Any], calls: int, pool: int) -> tuple[list[float], float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(calls):
        s = time.perf_counter()
        fn(i % pool)
        lat.append(time.perf_counter() - s)
    return lat, calls / (time.perf_counter() - t0)


def _loaded(
    fn: Callable[[int], Any], calls: int, threads: int, pool: int
) -> tuple[list[float], float, int]:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker() -> None:
        mine = []
        bad = 0
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            s = time.perf_counter()
            try:
                ok = fn(i % pool)
            except Exception as exc:  # counted, never hidden
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
                ok = False
            mine.append(time.perf_counter() - s)
            bad += not ok
        with lock:
            lat.extend(mine)
            errors[0] += bad

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat, calls / (time.perf_counter() - t0), errors[0]


class _CountingProxy:
    """Loopback TCP relay that counts every byte in both directions (the real wire size)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    self.bytes += len(data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seq-calls", type=int, default=300)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--pool", type=int, default=32, help="distinct (query, candidates) sets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-workers", type=int, default=8)
    ap.add_argument("--server-env", nargs="*", default=[], help="KEY=VALUE for the server")
    args = ap.parse_args()

    try:  # the same BLAS setting the server uses, so the in-process rows are comparable
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    cands = rng.standard_normal((args.pool, args.k, args.d)).astype(np.float32)
    cands /= np.linalg.norm(cands, axis=-1, keepdims=True)
    queries = cands[:, :3].mean(1) + 0.05 * rng.standard_normal((args.pool, args.d))
    queries = queries.astype(np.float32)
    local = LocalReranker(device=args.device)
    want = [local.select(queries[i], cands[i], args.n).indices.tolist() for i in range(args.pool)]

    def local_call(i: int) -> bool:
        return local.select(queries[i], cands[i], args.n).indices.tolist() == want[i]

    _sequential(local_call, 30, args.pool)  # warm-up
    seq_local, _ = _sequential(local_call, args.seq_calls, args.pool)
    load_local, tput_local, err_local = _loaded(local_call, args.calls, args.threads, args.pool)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    server = subprocess.Popen(
        [sys.executable, "-m", "qdrant_sift.client.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--device", args.device, "--log-level", "warning",
         "--max-workers", str(args.max_workers)],
        env={**os.environ, "QDRANT_SIFT_TOKEN": "", **extra_env},
    )  # fmt: skip
    try:
        remote = RemoteReranker(f"grpc://127.0.0.1:{port}", retries=10, backoff=0.2, timeout=60)
        assert remote.health() == "SERVING"

        def remote_call(i: int) -> bool:
            return remote.select(queries[i], cands[i], args.n).indices.tolist() == want[i]

        _sequential(remote_call, 30, args.pool)  # warm-up (connection, server-side caches)
        seq_remote, _ = _sequential(remote_call, args.seq_calls, args.pool)
        load_remote, tput_remote, err_remote = _loaded(
            remote_call, args.calls, args.threads, args.pool
        )
        remote.close()
        proxy = _CountingProxy(port)
        with RemoteReranker(f"grpc://127.0.0.1:{proxy.port}", timeout=60) as counted:
            for i in range(10):  # connection set-up and HPACK tables warm
                counted.select(queries[i % args.pool], cands[i % args.pool], args.n)
            proxy.bytes = 0
            for i in range(200):
                counted.select(queries[i % args.pool], cands[i % args.pool], args.n)
            wire = proxy.bytes / 200
        proxy.close()
    finally:
        server.terminate()
        server.wait(60)

    raw = (args.k + 1) * args.d * 4 + args.n * 8
    base = _pct(seq_local, 50)
    rows = [
        ("in-process", 1, args.seq_calls, seq_local, None, 0),
        ("gRPC loopback", 1, args.seq_calls, seq_remote, None, 0),
        ("in-process", args.threads, args.calls, load_local, tput_local, err_local),
        ("gRPC loopback", args.threads, args.calls, load_remote, tput_remote, err_remote),
    ]
    print(
        f"\nSelect K={args.k} d={args.d} N={args.n}, {os.cpu_count()} CPUs, device={args.device}\n"
    )
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs (loaded: not a result)\n")
    print("| path | threads | calls | p50 ms | p99 ms | calls/s | p50 / in-process p50 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, th, calls, lat, tput, err in rows:
        tp = f"{tput:.0f}" if tput else f"{1e3 / _pct(lat, 50):.0f} (1/p50)"
        ref = _pct(seq_local if th == 1 else load_local, 50)
        print(f"| {name} | {th} | {calls} | {_pct(lat, 50):.2f} | {_pct(lat, 99):.2f} | {tp} "
              f"| {_pct(lat, 50) / ref:.2f}× | {err} |")  # fmt: skip
    print("\n| bytes per call | value | / raw float32 payload |")
    print("|---|---:|---:|")
    print(f"| raw float32 payload (query+candidates in, indices+variances out) | {raw} | 1.00× |")
    print(f"| on the wire, both directions (TCP payload incl. HTTP/2 + gRPC framing) | {wire:.0f} "
          f"| {wire / raw:.3f}× |")  # fmt: skip
    overhead = _pct(seq_remote, 50) - base
    checks = [
        (f"sequential p50 overhead {overhead:.2f} ms <= 1.5 ms", overhead <= 1.5),
        (f"throughput {tput_remote:.0f} calls/s >= 300 (8 threads)", tput_remote >= 300),
        (f"errors {err_remote} == 0, picks identical to in-process", err_remote == 0),
    ]
    print()
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'MISS'}: {text}")
    return 0 if err_remote == 0 and err_local == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
