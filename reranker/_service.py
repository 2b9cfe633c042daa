"""The gRPC reranker service: SIFT selection (and one-hop Qdrant recall + SIFT) over the network.

Every RPC goes through :meth:`RerankerServicer._run`, so status mapping, deadlines, request ids,
metrics and logs are uniform. Bad input is rejected before work starts with the same typed
error the in-process selector raises; its class name travels in the ``x-sift-error`` trailer so
:class:`~qdrant_sift.reranker.RemoteReranker` can raise that very class again.

Every call runs in a cancellation scope (:mod:`._cancel`): when the client goes away, the
deadline passes or the server stops waiting at shutdown, the selection stops at its next pick
and the call is logged and counted as CANCELLED / DEADLINE_EXCEEDED, never OK. The work of a
call is capped by ``Limits.max_cost`` before it starts.

Recall opens stores lazily and keeps at most ``max_open_stores`` of them (least recently used
closed first; the cache is :mod:`._store_cache`); a name is validated before anything is opened,
a collection that does not exist is never cached (no file descriptor or lock file stays behind),
and ``collections`` optionally lists the only names the service may open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any

import grpc
import numpy as np

from qdrant_sift import errors
from qdrant_sift.errors import ServerLimitError
from qdrant_sift.options import DEFAULTS, SelectOptions
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

from ._cancel import CallScope, cancel_scope
from ._checks import check_dims
from ._limits import Limits, check_cost, check_n, selection_cost
from ._matrix import (
    filter_from_proto,
    from_matrix,
    id_to_proto,
    options_from_proto,
    payload_to_proto,
)
from ._metrics import Metrics
from ._store_cache import StoreCache

__all__ = ["SERVICE_NAME", "RerankerServicer"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Reranker"].full_name
log = logging.getLogger("qdrant_sift.reranker.service")
_Code = grpc.StatusCode

# Most specific first: the first matching class decides the status.
_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.CollectionNotFoundError, _Code.NOT_FOUND),
    (errors.EmptyCollectionError, _Code.FAILED_PRECONDITION),
    (errors.StoreLockedError, _Code.FAILED_PRECONDITION),
    (errors.StoreUnavailableError, _Code.UNAVAILABLE),
    (ValueError, _Code.INVALID_ARGUMENT),  # InvalidInputError and its subclasses
    (errors.QdrantSiftError, _Code.INTERNAL),
)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_deadline(context: grpc.ServicerContext, stage: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise _Abort(_Code.DEADLINE_EXCEEDED, f"deadline passed before {stage}; no work done")


def _to_response(sel: Any) -> pb.SelectResponse:
    return pb.SelectResponse(
        indices=np.asarray(sel.indices, dtype=np.int64).tolist(),
        variances=np.asarray(sel.variances, dtype=np.float32).tolist(),
        prior_variance=float(sel.prior_variance),
        stopped_early=bool(sel.stopped_early),
        strategy=str(sel.strategy),
    )


def _valid_collection(name: str) -> str:
    """The one collection-name rule of every backend (InvalidInputError -> INVALID_ARGUMENT)."""
    from qdrant_sift.client.stores import validate_collection_name

    return validate_collection_name(name)


class RerankerServicer(pb_grpc.RerankerServicer):
    """Implements ``qdrant_sift.v1.Reranker`` over a selector and (for Recall) a store factory.

    ``collections`` (None: any) is the allow-list of collection names Recall may open;
    ``max_open_stores`` bounds the stores kept open between calls.
    """

    def __init__(
        self,
        selector: Any,
        limits: Limits,
        metrics: Metrics,
        store_factory: Callable[[str], Any] | None = None,
        *,
        collections: Collection[str] | None = None,
        max_open_stores: int = 16,
        text: Any = None,
    ) -> None:
        self._selector = selector
        self.text = text  # a TextReranker (._text) for RerankTexts; None: FAILED_PRECONDITION
        self._limits = limits
        self._metrics = metrics
        self._store_factory = store_factory
        self._allowed = None if collections is None else frozenset(collections)
        self._stores = StoreCache(max_open_stores)
        self._calls: set[CallScope] = set()
        self._calls_lock = threading.Condition()

    # --- RPCs -------------------------------------------------------------------------------

    def Select(self, request: pb.SelectRequest, context: grpc.ServicerContext) -> Any:
        return self._run("Select", request, context, self._select)

    def SelectBatch(self, request: pb.SelectBatchRequest, context: grpc.ServicerContext) -> Any:
        return self._run("SelectBatch", request, context, self._select_batch)

    def Recall(self, request: pb.RecallRequest, context: grpc.ServicerContext) -> Any:
        return self._run("Recall", request, context, self._recall)

    def RerankTexts(self, request: pb.RerankTextsRequest, context: grpc.ServicerContext) -> Any:
        return self._run("RerankTexts", request, context, self._rerank_texts)

    # --- the shared envelope -------------------------------------------------------------------

    def _scope(self, context: grpc.ServicerContext) -> CallScope:
        """A scope that trips when the call ends early: client cancel, deadline, shutdown."""
        scope = CallScope(context.time_remaining())

        def on_termination() -> None:  # also runs after a normal finish, when nothing listens
            remaining = context.time_remaining()
            scope.cancel("deadline" if remaining is not None and remaining <= 0.01 else "cancelled")

        if not context.add_callback(on_termination):
            on_termination()  # the call already ended
        with self._calls_lock:
            self._calls.add(scope)
        return scope

    def _release(self, scope: CallScope) -> None:
        with self._calls_lock:
            self._calls.discard(scope)
            self._calls_lock.notify_all()

    def running(self) -> int:
        """How many calls are being handled now."""
        with self._calls_lock:
            return len(self._calls)

    def cancel_all(self, timeout: float = 0.0) -> bool:
        """Stop every running call at its next pick; wait up to ``timeout`` s for them to end.

        True when no call is running any more.
        """
        with self._calls_lock:
            for scope in self._calls:
                scope.cancel("cancelled")
            return self._calls_lock.wait_for(lambda: not self._calls, timeout)

    def _run(self, method: str, request: Any, context: grpc.ServicerContext, work: Any) -> Any:
        started = time.perf_counter()
        metadata = dict(context.invocation_metadata() or ())
        rid = str(metadata.get("x-request-id") or uuid.uuid4().hex)
        trailing: list[tuple[str, str]] = [("x-request-id", rid)]
        code, message, response, info = _Code.OK, "", None, {}
        self._metrics.in_flight.inc()
        scope = self._scope(context)
        try:
            _check_deadline(context, "the call started")
            log.debug("rpc start", extra={"request_id": rid, "method": method})
            with cancel_scope(scope.check):
                response, info = work(request, context)
            if scope.cancelled.is_set() or scope.expired():  # finished, but nobody is waiting
                raise errors.SelectionCancelledError(
                    "call ended before its result was sent",
                    "deadline" if scope.expired() else scope.reason,
                )
        except errors.SelectionCancelledError as exc:
            deadline = exc.reason == "deadline"
            code = _Code.DEADLINE_EXCEEDED if deadline else _Code.CANCELLED
            message, response = str(exc), None
        except _Abort as exc:
            code, message = exc.code, str(exc)
        except (errors.QdrantSiftError, ValueError) as exc:
            code = next(c for cls, c in _STATUS if isinstance(exc, cls))
            message = str(exc)
            if isinstance(exc, errors.QdrantSiftError):
                trailing.append(("x-sift-error", type(exc).__name__))
            if isinstance(exc, ServerLimitError):
                trailing.append(("x-sift-limit", str(exc.limit)))
        except Exception as exc:  # a bug, not the caller's fault: log it with its request id
            code, message = _Code.INTERNAL, f"internal error ({type(exc).__name__}), id {rid}"
            log.exception("rpc failed", extra={"request_id": rid, "method": method})
        finally:
            self._metrics.in_flight.dec()
            self._release(scope)
        elapsed = time.perf_counter() - started
        self._metrics.observe(method, code.name, elapsed)
        if code is _Code.OK and "strategy" in info:
            self._metrics.selected.labels(strategy=info["strategy"]).inc(info.get("picked", 0))
        if log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": rid,
                "method": method,
                "code": code.name,
                "peer": context.peer(),
            }
            fields["ms"] = round(elapsed * 1e3, 3)
            if message:
                fields["error"] = message
            log.info("rpc", extra={**fields, **info})
        context.set_trailing_metadata(tuple(trailing))
        if code is not _Code.OK:
            context.abort(code, message)
        return response

    # --- Select / SelectBatch -------------------------------------------------------------------

    def _decode(self, msg: pb.Matrix, name: str, rows: tuple[str, int]) -> np.ndarray:
        return from_matrix(msg, name, max_rows=rows, max_cols=("max_d", self._limits.max_d))

    def _select(self, req: pb.SelectRequest, context: grpc.ServicerContext) -> Any:
        lim = self._limits
        query = self._decode(req.query, "query", ("max_m", lim.max_m))
        cands = self._decode(req.candidates, "candidates", ("max_k", lim.max_k))
        check_dims(query, cands)
        n = check_n(req.n, lim)
        check_cost(selection_cost(cands.shape[0], n, cands.shape[1], query.shape[0]), lim)
        opts = options_from_proto(req)
        sel = self._selector.select(query, cands, n, **opts)
        info = {"k": cands.shape[0], "d": cands.shape[1], "m": query.shape[0], "n": n}
        return _to_response(sel), {**info, "strategy": opts["strategy"], "picked": len(sel.indices)}

    def _select_batch(self, req: pb.SelectBatchRequest, context: grpc.ServicerContext) -> Any:
        lim = self._limits
        if len(req.requests) > lim.max_batch:
            raise ServerLimitError.exceeded(
                "max_batch", len(req.requests), lim.max_batch, "requests"
            )
        shared = None
        if req.HasField("shared_candidates"):
            shared = self._decode(req.shared_candidates, "shared_candidates", ("max_k", lim.max_k))
        # Decode and check everything first; then one select_batch per group of equal options.
        groups: dict[tuple[Any, ...], list[tuple[int, np.ndarray, np.ndarray | None]]] = {}
        cost, dim = 0, None  # one dimension for the whole batch, whatever the grouping
        for i, r in enumerate(req.requests):
            p = f"requests[{i}]."
            query = self._decode(r.query, p + "query", ("max_m", lim.max_m))
            cands = None
            if r.HasField("candidates"):
                cands = self._decode(r.candidates, p + "candidates", ("max_k", lim.max_k))
            elif shared is None:
                raise errors.InvalidInputError(f"{p}candidates unset and no shared_candidates")
            member = cands if cands is not None else shared
            assert member is not None  # one of them is set (checked above)
            check_dims(query, member, prefix=p)
            if dim is None:
                dim = query.shape[1]
            elif query.shape[1] != dim:
                raise errors.DimensionMismatchError(
                    f"{p}query has d={query.shape[1]} but requests[0] has d={dim}; every member "
                    "of a batch needs the same dimension"
                )
            n = check_n(r.n, lim, p + "n")
            cost += selection_cost(member.shape[0], n, dim, query.shape[0])
            key = (n, cands is None, *sorted(options_from_proto(r).items()))
            groups.setdefault(key, []).append((i, query, cands))
        check_cost(cost, lim, "Σ K·n·(d+n) over the batch")
        out: list[pb.SelectResponse | None] = [None] * len(req.requests)
        picked = 0
        for (n, uses_shared, *opts), members in groups.items():
            _check_deadline(context, "a batch group started")
            queries = [q for _, q, _ in members]
            cands_arg = shared if uses_shared else [c for _, _, c in members]
            sels = self._selector.select_batch(queries, cands_arg, n, **dict(opts))
            for (i, _, _), sel in zip(members, sels, strict=True):
                out[i] = _to_response(sel)
                picked += len(sel.indices)
        info = {"batch": len(out), "groups": len(groups), "picked": picked}
        strategies = {dict(opts)["strategy"] for (_, _, *opts) in groups}
        if len(strategies) == 1:
            info["strategy"] = strategies.pop()
        responses = [r for r in out if r is not None]
        assert len(responses) == len(out)  # every member belongs to one group
        return pb.SelectBatchResponse(responses=responses), info

    # --- RerankTexts (the HTTP endpoints' twin; checks and scores in ._text) -------------------

    def _rerank_texts(self, req: pb.RerankTextsRequest, context: grpc.ServicerContext) -> Any:
        if self.text is None:
            raise _Abort(_Code.FAILED_PRECONDITION, "this server has no embedder for RerankTexts")
        from ._shapes import rerank_texts

        return rerank_texts(self.text, req)

    # --- Recall ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_collection(self, collection: str) -> Iterator[Any]:
        """The open store of ``collection`` for the duration of the block (:class:`StoreCache`):
        refused without a store factory or outside the allow-list, before anything is opened."""
        if self._store_factory is None:
            raise _Abort(
                _Code.FAILED_PRECONDITION,
                "Recall needs a Qdrant store: start the server with --qdrant-url (or QDRANT_URL)",
            )
        if self._allowed is not None and collection not in self._allowed:
            raise errors.CollectionNotFoundError(
                f"collection {collection!r} is not served here (allowed: "
                f"{', '.join(sorted(self._allowed)) or 'none'})"
            )
        with self._stores.open(collection, self._store_factory) as store:
            yield store

    def _recall(self, req: pb.RecallRequest, context: grpc.ServicerContext) -> Any:
        lim = self._limits
        if not req.collection:
            raise errors.InvalidInputError("collection is required")
        collection = _valid_collection(req.collection)
        query = self._decode(req.query, "query", ("max_m", lim.max_m))
        if req.k == 0:
            raise errors.InvalidInputError("k must be >= 1, got 0")
        if req.k > lim.max_recall_k:
            raise ServerLimitError.exceeded("max_recall_k", req.k, lim.max_recall_k, "k")
        n = check_n(req.n, lim)
        check_cost(selection_cost(req.k, n, query.shape[1], query.shape[0]), lim)
        opts = options_from_proto(req)
        flt = filter_from_proto(req.filter) if req.HasField("filter") else None
        both = req.both_directions if req.HasField("both_directions") else DEFAULTS.both_directions
        with self.open_collection(collection) as store:
            cands = store.recall(query, int(req.k), both_directions=both, filter=flt)
        info = {"collection": req.collection, "k": int(req.k), "recalled": len(cands), "n": n}
        info["strategy"] = opts["strategy"]
        if len(cands) == 0:
            return pb.RecallResponse(recalled=0, strategy=opts["strategy"]), info
        _check_deadline(context, "selection started")
        check_dims(query, cands.vectors)
        # Callers cannot know how many points the filter leaves: clamp where repeats are impossible.
        n = SelectOptions(strategy=opts["strategy"], unique=opts["unique"]).clip_n(n, len(cands))
        sel = self._selector.select(query, cands.vectors, n, **opts)
        points = []
        for pos, idx in enumerate(np.asarray(sel.indices, dtype=np.int64).tolist()):
            pid = cands.ids[idx]
            point = pb.RecalledPoint(
                id=str(pid),
                point_id=id_to_proto(pid),
                score=float(cands.scores[idx]),
                variance=float(sel.variances[pos]),
                candidate_index=idx,
            )
            if req.with_payload and cands.payloads:
                point.payload.CopyFrom(payload_to_proto(cands.payloads[idx]))
            points.append(point)
        info["picked"] = len(points)
        response = pb.RecallResponse(
            points=points,
            prior_variance=float(sel.prior_variance),
            stopped_early=bool(sel.stopped_early),
            recalled=len(cands),
            strategy=str(sel.strategy),
        )
        return response, info

    def open_stores(self) -> list[str]:
        """Names of the collections whose stores are open now (least recently used first)."""
        return self._stores.open_stores()

    def close(self) -> None:
        self._stores.close()
