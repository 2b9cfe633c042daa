"""Rerank over HTTP: Cohere v2 ``POST /v2/rerank`` and TEI ``POST /rerank``, beside gRPC.

Starlette on uvicorn (a maintained ASGI stack, no hand-written HTTP parsing), on its own thread
of the ``serve`` process, sharing the gRPC server's :class:`~._text.TextReranker` (selector,
embedder, cache), :class:`~._limits.Limits`, bearer token and metrics registry.

Every request passes, in order: bearer token (401), shutdown (503), body size (413, before the
body is read when ``Content-Length`` says so), in-flight limit (429), JSON (400), fields (422 for
an unknown or unsupported field, never silently dropped), limits (413 naming the limit), then
the work under a deadline (``--http-timeout``, lowered per request by an
``X-Request-Timeout: SECONDS`` header; 504). A warm call (every text's embedding cached, a
selection of at most :data:`INLINE_MAX_COST` multiply-adds, about a millisecond on one core, on
the CPU, and a body of at most :data:`INLINE_MAX_BODY` bytes) runs on the event loop itself:
handing it to a thread and back would cost more than the work. Anything else (embedding, a
stored-vector lookup, a big or CUDA selection) runs in a worker thread, where it also stops
when the client goes away or the server stops waiting at shutdown. Errors keep each API's body
shape (Cohere ``{"message"}``, TEI ``{"error", "error_type"}``; :mod:`._http_errors`) and carry
``x-sift-error`` (the :mod:`qdrant_sift.errors` class) and ``x-request-id``. ``/health`` (live)
and ``/ready`` (serving, not draining) are open. The request and response shapes themselves live
in :mod:`._shapes`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import uvicorn
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from qdrant_sift import errors

from ._cancel import CallScope, cancel_scope
from ._gatekeeper import bearer_token_ok
from ._http_errors import Refusal, classify, error_response
from ._metrics import Metrics
from ._shapes import cohere_rerank, tei_rerank
from ._text import NotInline, TextReranker, inline_only

__all__ = ["INLINE_MAX_BODY", "INLINE_MAX_COST", "PROBE_PATHS", "HttpServer"]

#: Routes open without the token and outside the in-flight limit (load balancers and kubelet).
PROBE_PATHS = ("/health", "/ready")

log = logging.getLogger("qdrant_sift.reranker.service")
#: How often a running request checks whether its client hung up (seconds).
_WATCH_EVERY = 0.1
#: A cached call runs on the event loop when its selection costs at most this many multiply-adds
#: (:func:`~._limits.selection_cost`: 4.4 M for 50 of 200 at d = 384, ~1 ms on one core; the cap
#: keeps any inline call to a few ms, so probes and other requests never wait long) ...
INLINE_MAX_COST = 12_000_000
#: ... and its body is at most this big (hashing the texts is part of the inline work).
INLINE_MAX_BODY = 1 << 20


class HttpServer:
    """The HTTP endpoints on ``port`` (0 binds a free one; read ``.port``): ``start()``,
    ``stop(grace)``, ``refuse_new_calls()``, ``mark_unready()``."""

    def __init__(
        self,
        engine: TextReranker,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        max_concurrent: int = 64,
        workers: int = 8,
        timeout: float = 60.0,
        tls_cert: Any = None,
        tls_key: Any = None,
    ) -> None:
        if timeout <= 0 or max_concurrent < 1 or workers < 1:
            raise errors.ConfigError("http timeout, concurrency and workers must be positive")
        self.engine, self.metrics, self._token = engine, metrics, token
        self._max_body, self._max_concurrent = max_body_bytes, max_concurrent
        self._timeout, self._workers = timeout, workers
        self.refusing = False
        self.ready = False
        self._in_flight: set[CallScope] = set()
        self._inline_ok = engine.selects_on_cpu  # a CUDA selection may wait: never on the loop
        self._children: dict[tuple[Any, ...], Any] = {}
        self._cond = threading.Condition()
        self.responses = Counter(
            "qdrant_sift_http_responses",
            "HTTP responses by path and status.",
            ["path", "status"],
            registry=metrics.registry,
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted sockets: with the client's
        # delayed ACK every response then waits ~40 ms between its header and body segments.
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts vs TIME_WAIT
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise errors.ConfigError(f"cannot listen on {host}:{port} (HTTP): {exc}") from exc
        self.port: int = int(self._sock.getsockname()[1])
        if (tls_cert is None) != (tls_key is None) or isinstance(tls_cert, bytes):
            raise errors.ConfigError("HTTP TLS needs --tls-cert and --tls-key as file paths")
        cohere, tei = _Endpoint(self, cohere_rerank, "cohere"), _Endpoint(self, tei_rerank, "tei")
        # Cohere v1 clients (cohere.Client, older LiteLLM) send the same request to /v1/rerank
        self._rerank_routes = {"/v2/rerank": cohere, "/v1/rerank": cohere, "/rerank": tei}
        routes = [Route(path, ep, methods=["POST"]) for path, ep in self._rerank_routes.items()]
        routes += [
            Route(PROBE_PATHS[0], self._health, methods=["GET"]),
            Route(PROBE_PATHS[1], self._ready, methods=["GET"]),
        ]
        self._starlette = Starlette(routes=routes)
        # uvicorn picks uvloop and httptools when installed (the reranker extra installs both:
        # ~0.5 ms less server CPU per warm request than asyncio + h11). Keep-alive 75 s, above
        # the usual 60 s idle timeout of load balancers and client pools, so that a pooled
        # connection is not closed under a client about to reuse it.
        config = uvicorn.Config(
            self._app, interface="asgi3", log_config=None, access_log=False, lifespan="off",
            server_header=False, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
            timeout_keep_alive=75,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        # The work runs here, never on the event loop (probes must answer however busy).
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sift-http-work")

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, *, ready: bool = True) -> HttpServer:
        """Serve; ``/ready`` answers 200 at once, or once the caller sets ``.ready`` when
        ``ready=False`` (the ``serve`` process does that after gRPC listens too)."""
        self._sock.listen(2048)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="sift-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise errors.RerankerError(f"the HTTP server did not start on port {self.port}")
        self.ready = ready and not self.refusing
        return self

    def mark_unready(self) -> None:
        """``/ready`` answers 503 from now on (load balancers stop routing here)."""
        self.ready = False

    def refuse_new_calls(self) -> None:
        """New rerank requests get 503 from now on (a flag: safe in a signal handler)."""
        self.ready = False
        self.refusing = True

    def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new requests, let running ones finish within ``grace``, stop the rest at their
        next pick or embedding chunk, then close the port."""
        self.refuse_new_calls()
        with self._cond:
            if not self._cond.wait_for(lambda: not self._in_flight, grace):
                for scope in self._in_flight:
                    scope.cancel("cancelled")
                self._cond.wait_for(lambda: not self._in_flight, 1.0)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self._pool.shutdown(wait=False)
        self._sock.close()

    async def _app(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI app: a POST to a rerank path goes straight to its endpoint, which answers
        every error itself; the rest (probes, 404, 405, a trailing-slash redirect) goes through
        Starlette. Skipping Starlette's middleware and routing saves a warm call ~50 µs."""
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._rerank_routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self._starlette(scope, receive, send)

    # --- probes ---------------------------------------------------------------------------------

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _ready(self, request: Request) -> JSONResponse:
        ok = self.ready and not self.refusing
        return JSONResponse({"status": "ready" if ok else "unready"}, 200 if ok else 503)

    # --- the shared envelope ----------------------------------------------------------------------

    async def _handle(
        self, scope: Any, receive: Any, handler: Any, shape: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """One rerank request on the raw ASGI ``scope``/``receive``: ``(status, JSON body,
        headers)``. No Starlette ``Request``/``Response`` on this path: their header objects,
        body stream and response machinery cost a warm call more than they give here."""
        started = time.perf_counter()
        path: str = scope["path"]
        head: dict[bytes, str] = {}  # the first of a repeated header, as Headers.get has it
        auth: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth.append(("authorization", value.decode("latin-1")))
            elif name in _READ and name not in head:
                head[name] = value.decode("latin-1")
        rid = head.get(b"x-request-id") or os.urandom(16).hex()
        info: dict[str, Any] = {}
        call: CallScope | None = None
        headers: list[tuple[bytes, bytes]] = []
        self.metrics.in_flight.inc()
        try:
            self._admit(auth)
            body, size = await self._body(head.get(b"content-length", ""), receive)
            call = CallScope(self._deadline(head.get(b"x-request-timeout")))
            with self._cond:
                if len(self._in_flight) >= self._max_concurrent:
                    raise Refusal(
                        429, "RESOURCE_EXHAUSTED",
                        f"{self._max_concurrent} requests in flight; retry later", "Overloaded",
                    )  # fmt: skip
                self._in_flight.add(call)
            work = functools.partial(handler, self.engine, body, rid)
            payload = None
            if self._inline_ok and size <= INLINE_MAX_BODY:
                payload = self._inline(call, work, info)
            if payload is None:
                payload = await self._run(scope, receive, call, work, info)
            status, code, content = 200, "OK", orjson.dumps(payload)
        except Exception as exc:
            refusal = classify(exc, rid)
            if refusal.status == 500 and not refusal.error:
                log.exception("http request failed", extra={"request_id": rid, "method": path})
            status, code = refusal.status, refusal.code
            info["error"] = str(refusal)
            content, headers = error_response(refusal, shape, rid)
        finally:
            self.metrics.in_flight.dec()
            if call is not None:
                with self._cond:
                    self._in_flight.discard(call)
                    self._cond.notify_all()
        elapsed = time.perf_counter() - started
        self.metrics.observe(path, code, elapsed)
        self._child(self.responses, path=path, status=str(status)).inc()
        if code == "OK" and "strategy" in info:
            selected = self._child(self.metrics.selected, strategy=info["strategy"])
            selected.inc(info.get("picked", 0))
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else ""
        log.info("http", extra={"request_id": rid, "method": path, "status": status, "code": code,
                                "peer": peer, "ms": round(elapsed * 1e3, 3), **info})  # fmt: skip
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(content)),
                    (b"x-request-id", rid.encode("latin-1"))]  # fmt: skip
        return status, content, headers

    def _child(self, metric: Any, **labels: str) -> Any:
        """``metric.labels(**labels)``, looked up once per label set (paths, statuses and
        strategies are small fixed sets; ``labels()`` locks and builds a key on every call)."""
        key = (id(metric), *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child

    def _admit(self, auth: list[tuple[str, str]]) -> None:
        if self._token is not None and not bearer_token_ok(auth, self._token):
            raise Refusal(
                401, "UNAUTHENTICATED", "missing or invalid 'Authorization: Bearer' token"
            )
        if self.refusing:
            raise Refusal(503, "UNAVAILABLE", "server is shutting down")

    async def _body(self, declared: str, receive: Any) -> tuple[dict[str, Any], int]:
        too_big = Refusal(
            413, "RESOURCE_EXHAUSTED",
            f"request body exceeds the server limit max_message_bytes={self._max_body}",
            "ServerLimitError", "max_message_bytes",
        )  # fmt: skip
        if declared.isdigit() and int(declared) > self._max_body:
            raise too_big
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(503, "CANCELLED", "the client hung up before sending the body")
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > self._max_body:
                raise too_big
            chunks.append(chunk)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # What orjson refuses but the json module reads (NaN, lone surrogates, a BOM or
            # UTF-16/32 text) reads as before; only then is the body bad JSON.
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise Refusal(400, "INVALID_ARGUMENT", f"body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise Refusal(422, "INVALID_ARGUMENT", "body must be a JSON object")
        return body, size

    def _deadline(self, raw: str | None) -> float:
        if raw is None:
            return self._timeout
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise Refusal(422, "INVALID_ARGUMENT", f"X-Request-Timeout must be > 0 s, got {raw!r}")
        return min(value, self._timeout)

    @staticmethod
    def _guarded(scope: CallScope, work: Callable[[], Any], info: dict[str, Any]) -> Any:
        scope.check()  # the deadline may have passed while queued
        with cancel_scope(scope.check):
            payload, details = work()
        info.update(details)
        scope.check()  # finished, but nobody waits for the answer any more
        return payload

    def _inline(self, scope: CallScope, work: Callable[[], Any], info: dict[str, Any]) -> Any:
        """``work`` on the event loop if it is a cheap, cached call (see the module docs), else
        None having done nothing but checks, hashing and cache lookups: the worker pool then
        runs it. Errors (a bad field, a limit, the deadline) raise here as they would there."""
        try:
            with inline_only(INLINE_MAX_COST):
                return self._guarded(scope, work, info)
        except NotInline:
            return None

    async def _run(
        self, scope: Any, receive: Any, call: CallScope, work: Callable[[], Any],
        info: dict[str, Any],
    ) -> Any:  # fmt: skip
        """``work`` in the worker pool; while it runs, a client that hangs up (checked every
        0.1 s) stops it at its next pick or embedding chunk."""
        guarded = functools.partial(self._guarded, call, work, info)
        future = asyncio.get_running_loop().run_in_executor(self._pool, guarded)
        request = Request(scope, receive)
        try:
            while True:
                done, _ = await asyncio.wait((future,), timeout=_WATCH_EVERY)
                if done:
                    return future.result()
                if not call.cancelled.is_set() and await request.is_disconnected():
                    call.cancel("cancelled")
        except asyncio.CancelledError:  # the server stops waiting: so does the work
            call.cancel("cancelled")
            raise


#: The request headers a rerank call reads besides ``authorization`` (ASGI lower-cases names).
_READ = frozenset({b"content-length", b"x-request-id", b"x-request-timeout"})


class _Endpoint:
    """One rerank route as a raw ASGI app (a class, so Starlette's router, which answers the
    other methods with 405, would call it as ASGI too)."""

    def __init__(self, server: HttpServer, handler: Any, shape: str) -> None:
        self._server, self._handler, self._shape = server, handler, shape

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = self._server
        status, body, headers = await server._handle(scope, receive, self._handler, self._shape)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
