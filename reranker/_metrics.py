"""Observability for the reranker service: Prometheus metrics and JSON-lines logs.

Each server owns its own ``CollectorRegistry`` so several servers (tests, sidecars) can live in
one process without clashing over metric names; the registry is served on its own port so a
scrape never queues behind selection work in the gRPC thread pool.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["JsonFormatter", "Metrics", "configure_json_logging"]

# Loopback Select at K=200, N=50 takes about a millisecond; large batches take seconds.
_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Metrics:
    """Request counters by method and status, errors by status, latency, and in-flight calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "qdrant_sift_rpc_requests",
            "RPCs finished, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "qdrant_sift_rpc_errors",
            "RPCs that ended with a status other than OK, by method and code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qdrant_sift_rpc_duration_seconds",
            "Server-side RPC handling time, by method.",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qdrant_sift_rpc_in_flight", "RPCs being handled now.", registry=self.registry
        )
        self.selected = Counter(
            "qdrant_sift_selected_points",
            "Points picked across all calls, by strategy.",
            ["strategy"],
            registry=self.registry,
        )
        self._http: Any = None
        self._thread: threading.Thread | None = None
        # (method, code) -> its children: labels() takes a lock and builds a key on every call,
        # a few µs that every request would pay (methods and codes are a small fixed set)
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = (
                self.requests.labels(method=method, code=code),
                self.errors.labels(method=method, code=code) if code != "OK" else None,
                self.latency.labels(method=method),
            )
            self._children[(method, code)] = children
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose ``/metrics`` over HTTP; returns the bound port (``port=0`` picks a free one)."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def shutdown(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra={...}`` fields.

    Serialised by orjson (compact; what it cannot encode, such as an int beyond 64 bits, falls
    back to the json module) with one ``strftime`` a second: every HTTP request logs a line, and
    the json module's encoder and a ``strftime`` per line were most of a warm call's log cost.
    """

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}
    _second: tuple[int, str] = (-1, "")  # a whole second and its "%Y-%m-%dT%H:%M:%S" text

    def format(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        out: dict[str, Any] = {
            "ts": f"{text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # orjson.JSONEncodeError is one
            return json.dumps(out, default=str)


def configure_json_logging(level: str = "info", stream: Any = None) -> None:
    """Route the package's logs to ``stream`` (stderr) as JSON lines; idempotent."""
    logger = logging.getLogger("qdrant_sift")
    for handler in list(logger.handlers):
        if getattr(handler, "_qdrant_sift_json", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._qdrant_sift_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
