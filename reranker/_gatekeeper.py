"""The gRPC server's gatekeeper: auth, shutdown, size and parsing of every Reranker call, on raw
bytes and before any work, each refusal counted; and :func:`bearer_token_ok`, the token check
the HTTP endpoints share.

Split from :mod:`._server` so that module is about building and running the server.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ._metrics import Metrics
from ._service import SERVICE_NAME

__all__ = ["Gatekeeper", "bearer_token_ok"]

log = logging.getLogger("qdrant_sift.reranker.service")
_Code = grpc.StatusCode
_RERANKER = f"/{SERVICE_NAME}/"
_HEALTH = "/grpc.health.v1.Health/"


def bearer_token_ok(metadata: Any, token: str) -> bool:
    """Whether ``authorization`` carries ``Bearer <token>``: the scheme is case-insensitive
    (RFC 7235), the token compared in constant time."""
    expected = token.encode()
    for key, value in metadata or ():
        if key != "authorization" or not isinstance(value, str):
            continue
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.lstrip(" ").encode(), expected
        ):
            return True
    return False


class Gatekeeper(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Auth, shutdown, size and parsing for every Reranker call, before any work, counted.

    Reranker methods get their request as raw bytes; the wrapped handler checks, in order, the
    bearer token (UNAUTHENTICATED), that the server is not shutting down (UNAVAILABLE), the size
    (RESOURCE_EXHAUSTED naming ``max_message_bytes``), and parses the message (malformed:
    INVALID_ARGUMENT). Health stays open; reflection needs the token when one is set.
    """

    def __init__(self, token: str | None, metrics: Metrics, max_bytes: int) -> None:
        self._token = token
        self._metrics = metrics
        self._max_bytes = max_bytes
        self.refusing = False  # set on SIGTERM: new calls get UNAVAILABLE

    def _authorized(self, details: Any) -> bool:
        return self._token is None or bearer_token_ok(details.invocation_metadata, self._token)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(_HEALTH):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        authorized = self._authorized(details)
        if not details.method.startswith(_RERANKER) or handler.request_streaming:
            return handler if authorized else _reject_with(handler, self._deny(method))
        parse, behavior = handler.request_deserializer, handler.unary_unary

        def gate(raw: bytes, context: grpc.ServicerContext) -> Any:
            if not authorized:
                return self._deny(method)(raw, context)
            if self.refusing:
                self._refuse(method, context, _Code.UNAVAILABLE, "server is shutting down")
            if len(raw) > self._max_bytes:
                self._refuse(
                    method,
                    context,
                    _Code.RESOURCE_EXHAUSTED,
                    f"request of {len(raw)} bytes exceeds the server limit "
                    f"max_message_bytes={self._max_bytes}",
                    limit="max_message_bytes",
                )
            try:
                request = parse(raw)
            except (DecodeError, ValueError, TypeError) as exc:
                self._refuse(
                    method,
                    context,
                    _Code.INVALID_ARGUMENT,
                    f"malformed {method} request: {exc}",
                    error="InvalidInputError",
                )
            return behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            gate, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def _refuse(
        self,
        method: str,
        context: grpc.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        *,
        limit: str | None = None,
        error: str | None = None,
    ) -> None:
        self._metrics.observe(method, code.name, 0.0)
        log.warning(
            "rpc refused",
            extra={"method": method, "code": code.name, "error": message, "peer": context.peer()},
        )
        trailing = [("x-sift-limit", limit)] if limit else []
        if error or limit:
            trailing.append(("x-sift-error", error or "ServerLimitError"))
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        context.abort(code, message)

    def _deny(self, method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        def reject(_request: Any, context: grpc.ServicerContext) -> Any:
            self._refuse(
                method,
                context,
                _Code.UNAUTHENTICATED,
                "missing or invalid 'authorization: Bearer' token",
            )

        return reject


def _reject_with(handler: Any, reject: Any) -> Any:
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
