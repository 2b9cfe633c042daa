"""Building and running the reranker gRPC server: auth, TLS, health, reflection, limits, drain.

``build_server`` wires the servicer with a bounded thread pool and ``maximum_concurrent_rpcs``
(overload is RESOURCE_EXHAUSTED from gRPC itself), the standard health service (open even with a
token, for probes) and server reflection. ``ServerHandle.stop`` flips health to NOT_SERVING
before draining, so a load balancer stops sending while in-flight calls finish; when ``grace``
runs out the running selections stop at their next pick, so the process exits on time.

Every Reranker call passes :class:`~._gatekeeper.Gatekeeper` first, on raw bytes: the bearer
token (scheme case-insensitive), then shutdown, then size, and only then is the message parsed
(malformed is INVALID_ARGUMENT). Each refusal is counted in the metrics with its status.

With ``health_port`` a second, small gRPC server answers health and reflection on its own port
and threads, outside the in-flight limit of the main port: probes get an answer at any load.

With ``http_port`` the Cohere/TEI rerank endpoints (:mod:`._http`) run in the same process on the
same :class:`~._text.TextReranker` (selector, embedder, cache), limits, token and metrics as the
``RerankTexts`` RPC; they drain together on stop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qdrant_sift import errors
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

from ._gatekeeper import Gatekeeper
from ._limits import Limits
from ._metrics import Metrics
from ._service import SERVICE_NAME, RerankerServicer
from ._tls import read_pem
from ._warm import warm_routes

__all__ = ["ServerHandle", "build_server", "serve"]

log = logging.getLogger("qdrant_sift.reranker.service")
#: The transport refuses (uncounted) only messages over this many times ``max_message_bytes``;
#: between 1× and this, the gatekeeper refuses them itself, counted, naming the limit.
_TRANSPORT_SLACK = 2
#: Seconds a selection gets to notice cancellation after the grace period before gRPC cuts it.
_CANCEL_MARGIN = 0.5


def _major_faults() -> int:
    """Page faults of this process that had to read from disk (0 where rusage lacks them)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_majflt)


class ServerHandle:
    """A built server: ``start()``, ``port``, ``metrics_port``, ``health_port``, ``stop(grace)``,
    ``wait()``."""

    def __init__(self, server: grpc.Server, port: int, servicer: RerankerServicer, **kw: Any):
        self._server, self.port, self.servicer = server, port, servicer
        self.health: health.HealthServicer = kw["health"]
        self.metrics: Metrics = kw["metrics"]
        self.address: str = kw["address"]
        self._metrics_addr: tuple[str, int] | None = kw["metrics_addr"]
        self._warmup: Callable[[], None] = kw["warmup"]
        self._gate: Gatekeeper = kw["gate"]
        self._health_server: grpc.Server | None = kw["health_server"]
        self.health_port: int | None = kw["health_port"]
        self.http: Any = kw.get("http")  # an _http.HttpServer, or None
        self.http_port: int | None = None if self.http is None else self.http.port
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> ServerHandle:
        # the compiled loop's routes and torch's first kernels: paid before serving, where a
        # compile inside a live call would delay it and could not be cancelled (see ._warm)
        self._warmup()
        if self.servicer.text.stored is not None:
            self.servicer.text.stored.refresh_in_background()
        if self.http is not None:
            self.servicer.text.warmup()  # load the embedder before /ready says yes
            self.http.start(ready=False)  # /ready says yes once gRPC serves too (below)
        if self._metrics_addr is not None:
            self.metrics_port = self.metrics.serve(self._metrics_addr[1], self._metrics_addr[0])
        if self._health_server is not None:
            self._health_server.start()
        self._server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.http is not None:
            self.http.ready = True
        log.info("listening", extra={"address": self.address, "port": self.port,
                                     "metrics_port": self.metrics_port,
                                     "health_port": self.health_port,
                                     "http_port": self.http_port})  # fmt: skip
        return self

    def refuse_new_calls(self) -> None:
        """From now on new Reranker calls get UNAVAILABLE (safe to call from a signal handler:
        it only sets a flag). Calls already running are not touched."""
        self._gate.refusing = True
        if self.http is not None:
            self.http.refuse_new_calls()

    def stop(self, grace: float | None = 5.0, *, unready_for: float = 0.0) -> None:
        """Health -> NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``.

        ``unready_for`` keeps serving (with health NOT_SERVING) that many seconds first, so
        load balancers and readiness probes stop routing here before the port closes. When
        ``grace`` runs out, running selections stop at their next pick (CANCELLED), so this
        returns about ``unready_for + grace`` seconds after it was called at the latest.
        """
        with self._lock:
            if self._stopped.is_set():
                return
            self.health.enter_graceful_shutdown()
            faults = _major_faults()
            log.info("draining", extra={"port": self.port, "grace": grace})
            if self.http is not None:
                self.http.mark_unready()
            if unready_for > 0:
                time.sleep(unready_for)
            self._gate.refusing = True
            http_stop = None
            if self.http is not None:  # drains beside gRPC, within the same grace
                http_stop = threading.Thread(target=self.http.stop, args=(grace,), daemon=True)
                http_stop.start()
            # gRPC's own cancel-at-grace answers UNAVAILABLE and leaves the handlers computing:
            # at ``grace`` stop the selections ourselves (they answer CANCELLED at their next
            # pick), and let gRPC cut off only what did not stop within a short margin.
            done = self._server.stop(None if grace is None else grace + _CANCEL_MARGIN)
            if grace is not None and not done.wait(grace) and self.servicer.running():
                log.info("grace period over: cancelling calls in flight",
                         extra={"port": self.port, "calls": self.servicer.running()})  # fmt: skip
                if not self.servicer.cancel_all(timeout=_CANCEL_MARGIN):
                    log.warning("calls still running after the grace period")
            done.wait()
            if self._health_server is not None:
                self._health_server.stop(None).wait()
            if http_stop is not None:
                http_stop.join()
            # The HTTP server notices a shutdown only at its next 0.5 s poll: don't wait for it.
            threading.Thread(target=self.metrics.shutdown, daemon=True).start()
            self.servicer.close()
            self._stopped.set()
            # Page-ins while draining (the host evicted this process's code or data) stall every
            # thread; the count tells a slow shutdown's cause from a defect in the drain.
            log.info("stopped", extra={"port": self.port,
                                       "major_faults": _major_faults() - faults})  # fmt: skip

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops; True if it did within ``timeout``."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)


def _default_store_factory(
    url: str | None, api_key: str | None, edge_path: str | os.PathLike[str] | None
) -> Callable[[str], Any] | None:
    """collection -> store: Qdrant at ``url``, else embedded Qdrant Edge under ``edge_path``.

    An Edge collection whose folder does not exist is NOT_FOUND without opening anything (an
    ``EdgeStore`` would create a lock file for it).
    """
    if url:

        def qdrant(collection: str) -> Any:
            from qdrant_sift.client.stores import QdrantStore

            return QdrantStore(collection, url=url, api_key=api_key)

        return qdrant
    if edge_path is not None:

        def edge(collection: str) -> Any:
            from qdrant_sift.client.stores import EdgeStore, shard_path

            if not shard_path(edge_path, collection).is_dir():
                raise errors.CollectionNotFoundError(
                    f"no collection {collection!r} in {edge_path}; create it or ingest first"
                )
            return EdgeStore(edge_path, collection)

        return edge
    return None


def build_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    device: str | None = None,
    token: str | None = None,
    tls_cert: str | os.PathLike[str] | bytes | None = None,
    tls_key: str | os.PathLike[str] | bytes | None = None,
    max_workers: int = 8,
    max_concurrent_rpcs: int | None = 64,
    limits: Limits | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    qdrant_url: str | None = None,
    qdrant_api_key: str | None = None,
    edge_path: str | os.PathLike[str] | None = None,
    selector: Any = None,
    store_factory: Callable[[str], Any] | None = None,
    max_connection_age: float | None = None,
    health_port: int | None = None,
    collections: Any = None,
    max_open_stores: int = 16,
    http_port: int | None = None,
    embedder: Any = None,
    embed_cache_size: int = 50_000,
    http_timeout: float = 60.0,
    rerank_collection: str | None = None,
    batch_threads: int | None = 1,
) -> ServerHandle:
    """Build (not start) the server; ``port=0`` binds a free port, read it from ``.port``.

    ``selector`` defaults to in-process SIFT on ``device`` (CUDA when present); ``store_factory``
    (collection -> store) defaults to a ``QdrantStore`` on ``qdrant_url``, else an ``EdgeStore``
    under ``edge_path``; with neither, Recall answers FAILED_PRECONDITION.
    ``max_connection_age`` (seconds) makes long-lived client channels reconnect now and then
    (with a 30 s grace for calls in flight), so new replicas get traffic.
    ``health_port`` (0 picks a free one) serves health and reflection on their own port and
    threads, answerable however busy the main port is: point probes there.
    ``collections`` (names) is the allow-list of Recall; ``max_open_stores`` bounds the stores
    kept open.
    ``http_port`` (0 picks a free one) serves ``POST /v2/rerank`` (Cohere v2) and ``/rerank``
    (TEI); texts (there and in ``RerankTexts``) are embedded by ``embedder`` (an ``Embedder`` or
    a thunk; default the offline MiniLM on ``device``), cached by content hash
    (``embed_cache_size`` rows), and looked up first among the stored vectors of
    ``rerank_collection`` when given. ``http_timeout`` is the HTTP deadline in seconds.
    ``batch_threads``: threads of one CPU ``SelectBatch`` (default 1: concurrent calls are the
    parallelism, as with BLAS; None: the CPUs this process may use).
    """
    limits = limits or Limits()
    if (tls_cert is None) != (tls_key is None):
        raise errors.ConfigError("TLS needs both a certificate and a key (--tls-cert/--tls-key)")
    pems = None  # read now: an unreadable file is a ConfigError before anything is built
    if tls_cert is not None and tls_key is not None:
        pems = (read_pem(tls_key, "tls_key"), read_pem(tls_cert, "tls_cert"))
    if max_workers < 1 or (max_concurrent_rpcs is not None and max_concurrent_rpcs < 1):
        raise errors.ConfigError("max_workers and max_concurrent_rpcs must be >= 1")
    if selector is None:
        from qdrant_sift.reranker import LocalReranker

        selector = LocalReranker(device=device, threads=batch_threads)
    if store_factory is None:
        store_factory = _default_store_factory(qdrant_url, qdrant_api_key, edge_path)
    metrics = Metrics()
    from qdrant_sift.client.stores import validate_collection_name

    allowed = None if collections is None else [str(c) for c in collections]
    if allowed is not None:
        try:
            allowed = [validate_collection_name(c) for c in allowed]
        except errors.InvalidInputError as exc:
            raise errors.ConfigError(f"--collections: {exc}") from exc
    from ._embed_cache import StoredVectors
    from ._text import TextReranker

    text = TextReranker(
        selector, limits, metrics.registry, embedder, cache_size=embed_cache_size, device=device
    )
    servicer = RerankerServicer(
        selector,
        limits,
        metrics,
        store_factory,
        collections=allowed,
        max_open_stores=max_open_stores,
        text=text,
    )
    if rerank_collection is not None:
        stored_name = validate_collection_name(rerank_collection)
        text.stored = StoredVectors(
            stored_name,
            lambda: servicer.open_collection(stored_name),  # the LRU of stores Recall uses
            lambda: int(text.embedder.dim),
        )
    msg = limits.max_message_bytes
    gate = Gatekeeper(token, metrics, msg)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sift-rpc"),
        interceptors=[gate],
        options=[
            ("grpc.max_receive_message_length", min(msg * _TRANSPORT_SLACK, 2**31 - 1)),
            ("grpc.max_send_message_length", msg),
            ("grpc.so_reuseport", 0),  # a busy port must fail, not silently share
            *(
                [
                    ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
                    ("grpc.max_connection_age_grace_ms", 30_000),
                ]
                if max_connection_age
                else []
            ),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    pb_grpc.add_RerankerServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    creds = None if pems is None else grpc.ssl_server_credentials([pems])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = _bind(server, address, creds)
    health_server, bound_health = None, None
    if health_port is not None:
        # Own threads, no concurrency limit, tiny messages: never queued behind selections.
        health_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="sift-health"),
            interceptors=[Gatekeeper(token, metrics, 1 << 16)],
            options=[("grpc.max_receive_message_length", 1 << 16), ("grpc.so_reuseport", 0)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        reflection.enable_server_reflection(names, health_server)
        health_address = f"[{host}]:{health_port}" if ":" in host else f"{host}:{health_port}"
        bound_health = _bind(health_server, health_address, creds)

    def warmup() -> None:
        warm_routes(selector)  # every compiled route, before the server says it is ready

    http = None
    if http_port is not None:
        from ._http import HttpServer

        http = HttpServer(
            text, metrics, host=host, port=http_port, token=token, max_body_bytes=msg,
            max_concurrent=max_concurrent_rpcs or 64, workers=max_workers, timeout=http_timeout,
            tls_cert=tls_cert, tls_key=tls_key,
        )  # fmt: skip
    metrics_addr = None if metrics_port is None else (metrics_host or host, metrics_port)
    return ServerHandle(server, bound, servicer, health=health_servicer, metrics=metrics,
                        address=address, metrics_addr=metrics_addr, warmup=warmup, gate=gate,
                        health_server=health_server, health_port=bound_health,
                        http=http)  # fmt: skip


def _bind(server: grpc.Server, address: str, creds: Any) -> int:
    try:
        bound = (
            server.add_secure_port(address, creds)
            if creds is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise errors.ConfigError(f"cannot listen on {address}: {exc}") from exc
    if not bound:
        raise errors.ConfigError(f"cannot listen on {address}")
    return int(bound)


def serve(**kwargs: Any) -> ServerHandle:
    """:func:`build_server` and start it; returns the running handle."""
    return build_server(**kwargs).start()
