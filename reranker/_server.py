"""Building and running the reranker gRPC server: auth, TLS, health, reflection, limits, drain.

``build_server`` wires the servicer with a bounded thread pool and ``maximum_concurrent_rpcs``
(overload is RESOURCE_EXHAUSTED from gRPC itself), the standard health service (open even with a
token, for probes) and server reflection. ``ServerHandle.stop`` flips health to NOT_SERVING
before draining, so a load balancer stops sending while in-flight calls finish.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qdrant_sift import errors
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

from ._matrix import Limits
from ._metrics import Metrics
from ._service import SERVICE_NAME, RerankerServicer

__all__ = ["ServerHandle", "build_server", "serve"]

log = logging.getLogger("qdrant_sift.reranker.service")
_Code = grpc.StatusCode


class _TokenInterceptor(grpc.ServerInterceptor):
    """Bearer-token check on every method except health (probes carry no secrets)."""

    _OPEN = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str, metrics: Metrics) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(self._OPEN):
            return handler
        for key, value in details.invocation_metadata or ():
            if (
                key == "authorization"
                and isinstance(value, str)
                and hmac.compare_digest(value.encode(), self._expected)
            ):
                return handler
        return self._deny(handler, details.method.rsplit("/", 1)[-1])

    def _deny(self, handler: Any, method: str) -> Any:
        def reject(_request: Any, context: grpc.ServicerContext) -> Any:
            self._metrics.observe(method, "UNAUTHENTICATED", 0.0)
            log.warning("unauthenticated", extra={"method": method, "peer": context.peer()})
            context.abort(_Code.UNAUTHENTICATED, "missing or invalid 'authorization: Bearer' token")

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(reject, **kw)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(reject, **kw)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(reject, **kw)
        return grpc.unary_unary_rpc_method_handler(reject, **kw)


def _pem(value: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as fh:
        return fh.read()


class ServerHandle:
    """A built server: ``start()``, ``port``, ``metrics_port``, ``stop(grace)``, ``wait()``."""

    def __init__(self, server: grpc.Server, port: int, servicer: RerankerServicer, **kw: Any):
        self._server, self.port, self.servicer = server, port, servicer
        self.health: health.HealthServicer = kw["health"]
        self.metrics: Metrics = kw["metrics"]
        self.address: str = kw["address"]
        self._metrics_addr: tuple[str, int] | None = kw["metrics_addr"]
        self._warmup: Callable[[], None] = kw["warmup"]
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> ServerHandle:
        self._warmup()  # first torch call initialises kernels: pay that before serving
        if self._metrics_addr is not None:
            self.metrics_port = self.metrics.serve(self._metrics_addr[1], self._metrics_addr[0])
        self._server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening", extra={"address": self.address, "port": self.port,
                                     "metrics_port": self.metrics_port})  # fmt: skip
        return self

    def stop(self, grace: float | None = 5.0, *, unready_for: float = 0.0) -> None:
        """Health -> NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``.

        ``unready_for`` keeps serving (with health NOT_SERVING) that many seconds first, so
        load balancers and readiness probes stop routing here before the port closes.
        """
        with self._lock:
            if self._stopped.is_set():
                return
            self.health.enter_graceful_shutdown()
            log.info("draining", extra={"port": self.port, "grace": grace})
            if unready_for > 0:
                time.sleep(unready_for)
            self._server.stop(grace).wait()
            self.metrics.shutdown()
            self.servicer.close()
            self._stopped.set()
            log.info("stopped", extra={"port": self.port})

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
    """collection -> store: Qdrant at ``url``, else embedded Qdrant Edge under ``edge_path``."""
    if url:

        def qdrant(collection: str) -> Any:
            from qdrant_sift.client.stores import QdrantStore

            return QdrantStore(collection, url=url, api_key=api_key)

        return qdrant
    if edge_path is not None:

        def edge(collection: str) -> Any:
            from qdrant_sift.client.stores import EdgeStore

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
) -> ServerHandle:
    """Build (not start) the server; ``port=0`` binds a free port, read it from ``.port``.

    ``selector`` defaults to in-process SIFT on ``device`` (CUDA when present); ``store_factory``
    (collection -> store) defaults to a ``QdrantStore`` on ``qdrant_url``, else an ``EdgeStore``
    under ``edge_path``; with neither, Recall answers FAILED_PRECONDITION.
    ``max_connection_age`` (seconds) makes long-lived client channels reconnect now and then
    (with a 30 s grace for calls in flight), so new replicas get traffic.
    """
    limits = limits or Limits()
    if (tls_cert is None) != (tls_key is None):
        raise errors.ConfigError("TLS needs both a certificate and a key (--tls-cert/--tls-key)")
    if max_workers < 1 or (max_concurrent_rpcs is not None and max_concurrent_rpcs < 1):
        raise errors.ConfigError("max_workers and max_concurrent_rpcs must be >= 1")
    if selector is None:
        from qdrant_sift.reranker import LocalReranker

        selector = LocalReranker(device=device)
    if store_factory is None:
        store_factory = _default_store_factory(qdrant_url, qdrant_api_key, edge_path)
    metrics = Metrics()
    servicer = RerankerServicer(selector, limits, metrics, store_factory)
    msg = limits.max_message_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sift-rpc"),
        interceptors=[_TokenInterceptor(token, metrics)] if token else None,
        options=[
            ("grpc.max_receive_message_length", msg),
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
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls_cert is not None and tls_key is not None:
            creds = grpc.ssl_server_credentials([(_pem(tls_key), _pem(tls_cert))])
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise errors.ConfigError(f"cannot listen on {address}: {exc}") from exc
    if not bound:
        raise errors.ConfigError(f"cannot listen on {address}")

    def warmup() -> None:
        rng = np.random.default_rng(0)
        selector.select(rng.standard_normal((1, 4), dtype=np.float32),
                        rng.standard_normal((8, 4), dtype=np.float32), 2)  # fmt: skip

    metrics_addr = None if metrics_port is None else (metrics_host or host, metrics_port)
    return ServerHandle(server, bound, servicer, health=health_servicer, metrics=metrics,
                        address=address, metrics_addr=metrics_addr, warmup=warmup)  # fmt: skip


def serve(**kwargs: Any) -> ServerHandle:
    """:func:`build_server` and start it; returns the running handle."""
    return build_server(**kwargs).start()
