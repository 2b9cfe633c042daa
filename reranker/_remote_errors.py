"""What makes a :class:`~._remote.RemoteReranker` raise what the same call raises in-process:
the arguments are checked as ``select`` checks them before anything is sent, and a failed RPC
becomes the :mod:`qdrant_sift.errors` class the server named in its ``x-sift-error`` trailer.

Split from :mod:`._remote` so that module is the client itself: channel, retries and the RPCs.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from qdrant_sift import errors
from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.options import SelectOptions, merge_options

from ._checks import batch_dims_message, check_options
from ._matrix import options_to_proto

__all__ = ["call_error", "check_batch_dims", "check_count", "request_options", "typed_error"]


def check_count(n: Any, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < 2**32:
        raise errors.InvalidInputError(f"{name} must be a non-negative int, got {n!r}")
    return int(n)


def check_batch_dims(queries: list[Any], candidates: Any) -> None:
    """Every member of a batch has one dimension (as in-process): typed error naming the member."""
    d0 = None
    for b, q in enumerate(queries):
        d = as_float32_matrix(q, f"queries[{b}]", finite=False).shape[1]
        if candidates is not None:
            dc = as_float32_matrix(
                candidates[b], f"candidates[{b}]", allow_vector=False, finite=False
            ).shape[1]
            if dc != d:
                raise errors.DimensionMismatchError(
                    f"queries[{b}]: query has dimension {d} but candidates have dimension {dc}"
                )
        if d0 is None:
            d0 = d
        elif d != d0:
            raise errors.DimensionMismatchError(batch_dims_message(b, d, d0))


def request_options(n: Any, options: SelectOptions | None, **given: Any) -> dict[str, Any]:
    """A request's option fields: the keywords merged with ``options`` and checked as
    ``select`` checks them, before anything is sent (one place for all three RPCs)."""
    merged = merge_options(options, **given)
    check_options(n, **merged)
    return options_to_proto(**merged)


_SERVER_TOO_LARGE = "SERVER: Received message larger than max"


def _sift_class(name: str) -> type[errors.QdrantSiftError] | None:
    """The public error class the server named in ``x-sift-error`` (None if it names none)."""
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    return cls if isinstance(cls, type) and issubclass(cls, errors.QdrantSiftError) else None


def typed_error(
    code: grpc.StatusCode, details: str, trailing: dict[str, Any], rid: str
) -> Exception | None:
    """The in-process class for a failed call, or None for a status without one."""
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        reason = "deadline" if code is grpc.StatusCode.DEADLINE_EXCEEDED else "cancelled"
        return errors.SelectionCancelledError(f"{details} (request id {rid})", reason)
    cls = _sift_class(str(trailing.get("x-sift-error", "")))
    if cls is errors.ServerLimitError:
        limit = trailing.get("x-sift-limit")
        return errors.ServerLimitError(details, str(limit) if limit else None)
    if cls is errors.RemoteRerankerError:
        return errors.RemoteRerankerError(details, code.name)
    if cls is not None:
        # Input errors read as they do in-process; system errors carry the id for the server log.
        return cls(details if issubclass(cls, ValueError) else f"{details} (request id {rid})")
    if code is grpc.StatusCode.INVALID_ARGUMENT:  # a ValueError that is not ours
        return errors.InvalidInputError(details)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and _SERVER_TOO_LARGE in details:
        # Far above max_message_bytes the transport refuses the request before the service sees
        # it: the same limit, so the same class.
        return errors.ServerLimitError(details, "max_message_bytes")
    return None


def call_error(exc: Any, target: str, rid: str, attempts: int) -> Exception:
    """The exception for a failed call to the reranker at ``target``: the in-process class
    (:func:`typed_error`), else :class:`~qdrant_sift.errors.RerankerUnavailableError` for
    UNAVAILABLE and :class:`~qdrant_sift.errors.RemoteRerankerError` for the rest."""
    code, details = exc.code(), exc.details() or ""
    trailing = dict(exc.trailing_metadata() or ())
    return typed_error(code, details, trailing, rid) or (
        errors.RerankerUnavailableError(
            f"reranker at {target} unavailable after {attempts} attempt(s): {details}"
        )
        if code is grpc.StatusCode.UNAVAILABLE
        else errors.RemoteRerankerError(f"{code.name}: {details} (request id {rid})", code.name)
    )
