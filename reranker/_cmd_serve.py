"""``qdrant-sift serve``: run the gRPC reranker (and with ``--http-port`` the HTTP rerank
endpoints) until SIGTERM/SIGINT, then drain and exit 0.

Also runnable as ``python -m qdrant_sift.reranker._cmd_serve``. Logs are JSON lines on stderr;
the first ``listening`` line carries the bound ``port``, ``metrics_port`` and ``health_port``
(useful with ``--port 0``). From SIGTERM on, new calls are refused (UNAVAILABLE) unless
``--unready-for`` asks to keep serving a while; in-flight calls get ``--grace`` seconds, then
stop at their next pick, so the process exits about ``--unready-for + --grace`` after SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

__all__ = ["add_arguments", "main", "register", "run"]


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else default


def _number(text: str) -> int:
    """An integer that may be written as a float (``5e10``)."""
    return int(float(text))


_number.__name__ = "number"  # argparse: "invalid number value: 'x'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The serve flags (the deploy manifests rely on these names)."""
    p.add_argument("--host", default="0.0.0.0", help="interface to bind (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port; 0 picks a free one")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int("QDRANT_SIFT_METRICS_PORT", None),
        help="serve Prometheus /metrics on this port (off unless given)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("QDRANT_SIFT_TOKEN") or None,
        help="require 'authorization: Bearer TOKEN' (env QDRANT_SIFT_TOKEN); health stays open",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=_env_int("QDRANT_SIFT_SERVE_HEALTH_PORT", None),
        help="also serve health and reflection on this port, with their own threads and outside "
        "--max-concurrent-rpcs, so probes answer at any load (point probes here; 0 picks a free "
        "one; env QDRANT_SIFT_SERVE_HEALTH_PORT)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=_env_int("QDRANT_SIFT_HTTP_PORT", None),
        help="also serve HTTP rerank endpoints (Cohere v2 POST /v2/rerank, TEI POST /rerank, "
        "GET /health, /ready) on this port, same token and limits (0 picks a free one; env "
        "QDRANT_SIFT_HTTP_PORT; off unless given)",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=60.0,
        help="HTTP deadline per request in seconds (a request's X-Request-Timeout may lower it)",
    )
    p.add_argument(
        "--embedder",
        default=os.environ.get("QDRANT_SIFT_EMBEDDER") or None,
        help="encoder for text reranking (HTTP and RerankTexts): a Hugging Face id or local "
        "folder (env QDRANT_SIFT_EMBEDDER; default the bundled offline all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--embed-cache-size",
        type=int,
        default=50_000,
        help="document embeddings kept in the LRU cache keyed by content hash (0 = off)",
    )
    p.add_argument(
        "--rerank-collection",
        default=None,
        help="reuse this collection's stored vectors for documents whose text it holds "
        "(matched by content hash; needs --qdrant-url or --edge-path and the same embedder)",
    )
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain (enables TLS)")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    p.add_argument("--max-workers", type=int, default=8, help="RPC thread pool size")
    p.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=64,
        help="calls admitted at once; more get RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--qdrant-url",
        default=os.environ.get("QDRANT_URL") or None,
        help="Qdrant server for the Recall RPC (env QDRANT_URL)",
    )
    p.add_argument(
        "--qdrant-api-key",
        default=os.environ.get("QDRANT_API_KEY") or None,
        help="Qdrant API key (env QDRANT_API_KEY)",
    )
    p.add_argument(
        "--edge-path", default=None, help="embedded Qdrant Edge folder for Recall (no server)"
    )
    p.add_argument(
        "--collections",
        default=os.environ.get("QDRANT_SIFT_COLLECTIONS") or None,
        help="comma-separated allow-list of collections Recall may open; others are NOT_FOUND "
        "(env QDRANT_SIFT_COLLECTIONS; default: any existing collection)",
    )
    p.add_argument(
        "--max-open-stores", type=int, default=16, help="stores kept open for Recall (LRU)"
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds in-flight calls get on shutdown; then they stop (CANCELLED)",
    )
    p.add_argument(
        "--max-connection-age",
        type=float,
        default=300.0,
        help="seconds before a client connection is asked to reconnect, so load spreads to new "
        "replicas behind a Kubernetes Service (0 = never)",
    )
    p.add_argument(
        "--unready-for",
        type=float,
        default=0.0,
        help="on SIGTERM, report NOT_SERVING this many seconds before closing the port",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads per call (default 1: concurrent calls are the parallelism; "
        "0 keeps the library default)",
    )
    p.add_argument(
        "--batch-threads",
        type=int,
        default=1,
        help="threads of one SelectBatch on the CPU (default 1: concurrent calls are the "
        "parallelism; 0: the CPUs this process may use)",
    )
    limits = p.add_argument_group("limits (violations answer INVALID_ARGUMENT naming the limit)")
    limits.add_argument("--max-k", type=int, default=50_000, help="candidates per request")
    limits.add_argument("--max-d", type=int, default=8_192, help="vector dimension")
    limits.add_argument("--max-n", type=int, default=10_000, help="picks per request")
    limits.add_argument("--max-m", type=int, default=1_024, help="query vectors per request")
    limits.add_argument("--max-batch", type=int, default=1_024, help="requests per SelectBatch")
    limits.add_argument("--max-recall-k", type=int, default=10_000, help="k per Recall")
    limits.add_argument(
        "--max-documents", type=int, default=1_000, help="documents per text rerank (HTTP 413)"
    )
    limits.add_argument(
        "--max-document-chars",
        type=int,
        default=100_000,
        help="characters per document or query in a text rerank (HTTP 413)",
    )
    limits.add_argument(
        "--max-message-mb", type=int, default=64, help="largest message (RESOURCE_EXHAUSTED)"
    )
    limits.add_argument(
        "--max-cost",
        type=_number,
        default=50_000_000_000,
        help="work per call, n·(K+m)·(d+n) summed over a batch (default 5e10, about 8 s of "
        "one core)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve",
        help="run the gRPC SIFT reranker service",
        description="Serve qdrant_sift.v1.Reranker (Select, SelectBatch, Recall, RerankTexts) "
        "over gRPC, and with --http-port the Cohere/TEI rerank endpoints over HTTP.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def _cap_blas(threads: int) -> None:
    """Concurrent selections each using every core oversubscribe the CPU (measured: 8 workers on
    2 cores, 271 -> 511 calls/s with one BLAS thread per call), so cap BLAS process-wide."""
    import logging

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        logging.getLogger("qdrant_sift.reranker.service").warning(
            "threadpoolctl not installed; set OPENBLAS_NUM_THREADS/OMP_NUM_THREADS=%d", threads
        )
        return
    threadpool_limits(limits=threads, user_api="blas")


def _embedder(name: str | None, device: str | None) -> Any:
    """None (the server's default, MiniLM, loaded on first use) or an encoder by id/folder."""
    if not name:
        return None
    from qdrant_sift.client.embed import HFEmbedder

    return HFEmbedder(name, device=device)


def run(args: argparse.Namespace) -> int:
    from qdrant_sift.errors import ConfigError

    from ._limits import Limits
    from ._metrics import configure_json_logging
    from ._server import build_server

    configure_json_logging(args.log_level)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.blas_threads:
        _cap_blas(args.blas_threads)
    try:
        limits = Limits(
            max_k=args.max_k,
            max_d=args.max_d,
            max_n=args.max_n,
            max_m=args.max_m,
            max_batch=args.max_batch,
            max_recall_k=args.max_recall_k,
            max_message_bytes=args.max_message_mb * 1024 * 1024,
            max_cost=args.max_cost,
            max_documents=args.max_documents,
            max_document_chars=args.max_document_chars,
        )
        collections = None
        if args.collections is not None:
            collections = [c.strip() for c in args.collections.split(",") if c.strip()]
        handle = build_server(
            host=args.host,
            port=args.port,
            device=None if args.device == "auto" else args.device,
            token=args.token,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            max_workers=args.max_workers,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            limits=limits,
            metrics_port=args.metrics_port,
            qdrant_url=args.qdrant_url,
            qdrant_api_key=args.qdrant_api_key,
            edge_path=args.edge_path,
            max_connection_age=args.max_connection_age or None,
            health_port=args.health_port,
            collections=collections,
            max_open_stores=args.max_open_stores,
            http_port=args.http_port,
            embedder=_embedder(args.embedder, None if args.device == "auto" else args.device),
            embed_cache_size=args.embed_cache_size,
            http_timeout=args.http_timeout,
            rerank_collection=args.rerank_collection,
            batch_threads=args.batch_threads or None,
        )
    except (ConfigError, OSError) as exc:
        print(f"qdrant-sift serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not args.unready_for:  # no call is admitted between the signal and the drain
            handle.refuse_new_calls()
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        handle.start()
        stop.wait()
        handle.stop(args.grace, unready_for=args.unready_for)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    # Everything is drained, closed and logged: end the process now. The interpreter's own
    # teardown (torch's, mostly) takes another ~0.5 s and would push the exit past grace + 1 s.
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qdrant-sift serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
