"""How the HTTP endpoints refuse: :class:`Refusal` (an HTTP status, the service-wide code as in
gRPC, the :mod:`qdrant_sift.errors` class and limit to report), :func:`classify` (the refusal of
an error the work raised) and :func:`error_response` (its body in the API's own shape, Cohere
``{"message"}`` or TEI ``{"error", "error_type"}``, and its headers).

Apart from :mod:`._http` (the server and the request envelope) to keep that module a readable
size, as :mod:`._remote_errors` is apart from :mod:`._remote`.
"""

from __future__ import annotations

from typing import Any

import orjson

from qdrant_sift import errors
from qdrant_sift.errors import ServerLimitError

__all__ = ["TEI_TYPES", "Refusal", "classify", "error_response"]

#: TEI's ``error_type`` by HTTP status (any other status: ``"Validation"``).
TEI_TYPES = {401: "Unauthorized", 429: "Overloaded", 500: "Backend", 503: "Unhealthy"}
TEI_TYPES[504] = "Unhealthy"


class Refusal(Exception):
    """An error answer: HTTP status, service-wide code, message, errors class, limit name."""

    def __init__(self, status: int, code: str, message: str, error: str = "", limit: str = ""):
        super().__init__(message)
        self.status, self.code, self.error, self.limit = status, code, error, limit


def classify(exc: BaseException, rid: str) -> Refusal:
    """The HTTP status and service-wide code (as in gRPC) of an error raised by the work."""
    name = type(exc).__name__
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, errors.SelectionCancelledError):
        if exc.reason == "deadline":
            return Refusal(504, "DEADLINE_EXCEEDED", str(exc), name)
        return Refusal(503, "CANCELLED", str(exc), name)
    if isinstance(exc, ServerLimitError):
        return Refusal(413, "INVALID_ARGUMENT", str(exc), name, str(exc.limit or ""))
    if isinstance(exc, (errors.InvalidInputError, ValueError)):
        typed = isinstance(exc, errors.QdrantSiftError)
        return Refusal(422, "INVALID_ARGUMENT", str(exc), name if typed else "")
    if isinstance(exc, errors.StoreUnavailableError):
        return Refusal(503, "UNAVAILABLE", str(exc), name)
    if isinstance(exc, errors.QdrantSiftError):
        return Refusal(500, "INTERNAL", str(exc), name)
    return Refusal(500, "INTERNAL", f"internal error ({name}), id {rid}")


def error_response(
    refusal: Refusal, shape: str, rid: str
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    message = str(refusal)
    if shape == "tei":
        kind = TEI_TYPES.get(refusal.status, "Validation")
        body: dict[str, Any] = {"error": message, "error_type": kind}
    else:
        body = {"id": rid, "message": message}
    headers = {}
    if refusal.error:
        body["sift_error"] = headers["x-sift-error"] = refusal.error
    if refusal.limit:
        body["limit"] = headers["x-sift-limit"] = refusal.limit
    if refusal.status == 401:
        headers["www-authenticate"] = "Bearer"
    if refusal.status in (429, 503):
        headers["retry-after"] = "1"
    pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return orjson.dumps(body), pairs
