"""``RemoteReranker``: the in-process selector's interface, served by a ``qdrant-sift serve`` peer.

Same ``select``/``select_batch`` signature and the same ``Selection`` results as
:func:`qdrant_sift.reranker.select` (device and dtype are the server's business). UNAVAILABLE is
retried with exponential backoff and jitter (selection is idempotent). Every other failure raises
the :mod:`qdrant_sift.errors` class the same call raises in-process: the server names the class
in the ``x-sift-error`` trailer, CANCELLED and DEADLINE_EXCEEDED (the server's or this client's
deadline) are :class:`~qdrant_sift.errors.SelectionCancelledError`, and only statuses with no
in-process twin (UNAUTHENTICATED, overload, an unknown server error) stay
:class:`~qdrant_sift.errors.RemoteRerankerError`; the checks before sending and this mapping
live in :mod:`._remote_errors`. This module does not import torch.
"""

from __future__ import annotations

import os
import random
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from qdrant_sift import errors
from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.options import DEFAULTS, SelectOptions
from qdrant_sift.v1 import reranker_pb2 as pb
from qdrant_sift.v1 import reranker_pb2_grpc as pb_grpc

from ._checks import is_per_prompt
from ._matrix import (
    filter_to_proto,
    id_from_proto,
    payload_from_proto,
    strategy_to_proto,
    to_matrix,
)
from ._remote_errors import call_error, check_batch_dims, check_count, request_options
from ._tls import read_pem

__all__ = ["RecallResult", "RemoteReranker"]

_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecallResult:
    """Points picked by a server-side Recall, in selection order.

    ``ids`` are ints or UUID strings as stored; ``payloads`` is None unless asked for (numbers
    that are whole come back as int, since protobuf Struct carries every number as a double).
    """

    ids: list[int | str]
    scores: np.ndarray
    variances: np.ndarray
    candidate_indices: np.ndarray
    payloads: list[dict[str, Any]] | None
    prior_variance: float
    stopped_early: bool
    recalled: int
    strategy: str

    def __len__(self) -> int:
        return len(self.ids)


def _selection(resp: pb.SelectResponse) -> Any:
    from ._select import Selection

    return Selection(
        indices=np.asarray(resp.indices, dtype=np.int64),
        variances=np.asarray(resp.variances, dtype=np.float32),
        prior_variance=float(resp.prior_variance),
        stopped_early=bool(resp.stopped_early),
        strategy=resp.strategy,
    )


class RemoteReranker:
    """Client of the ``qdrant_sift.v1.Reranker`` service.

    Args:
        target: ``grpc://host:port`` (plaintext), ``grpcs://host:port`` (TLS) or ``host:port``.
        token: bearer token the server was started with (``--token``).
        timeout: seconds per attempt (the gRPC deadline the server honours).
        retries: extra attempts on UNAVAILABLE, with exponential backoff and jitter.
        root_certificates: PEM bytes or a file path for ``grpcs://`` (system roots when None).
        batch_size: ``select_batch`` sends at most this many requests per call.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        batch_size: int = 256,
        max_message_bytes: int = _MAX_MESSAGE,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not isinstance(target, str) or not target:
            raise errors.ConfigError(f"target must be 'grpc://host:port', got {target!r}")
        secure = target.startswith("grpcs://")
        address = target.split("://", 1)[1] if "://" in target else target
        if "://" in target and not target.startswith(("grpc://", "grpcs://")):
            raise errors.ConfigError(f"target scheme must be grpc:// or grpcs://, got {target!r}")
        if not address or ":" not in address:
            raise errors.ConfigError(f"target needs host:port, got {target!r}")
        if timeout <= 0 or retries < 0 or batch_size < 1:
            raise errors.ConfigError("timeout must be > 0, retries >= 0, batch_size >= 1")
        self.target = target
        self._timeout = float(timeout)
        self._retries = int(retries)
        self._backoff, self._max_backoff = float(backoff), float(max_backoff)
        self._batch_size = int(batch_size)
        opts = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Reconnect soon after a restart so the retry backoff, not gRPC's, sets the pace.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            *options,
        ]
        if secure:
            roots = None
            if root_certificates is not None:
                roots = read_pem(root_certificates, "root_certificates")
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._stub = pb_grpc.RerankerStub(self._channel)
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._closed = False

    # --- selection ------------------------------------------------------------------------------

    def select(
        self,
        query: Any,
        candidates: Any,
        n: int,
        *,
        strategy: str = DEFAULTS.strategy,
        lam: float = DEFAULTS.lam,
        alpha: float | None = DEFAULTS.alpha,
        unique: bool = DEFAULTS.unique,
        normalize: bool = DEFAULTS.normalize,
        diversity: float = DEFAULTS.diversity,
        seed: int | None = DEFAULTS.seed,
        timeout: float | None = None,
        options: SelectOptions | None = None,
    ) -> Any:
        """Pick ``n`` of ``candidates`` (K, d) for ``query`` (d,) or (m, d); see ``select``."""
        opts = request_options(n, options, strategy=strategy, lam=lam, alpha=alpha,
                               unique=unique, normalize=normalize, diversity=diversity,
                               seed=seed)  # fmt: skip
        request = pb.SelectRequest(
            query=to_matrix(query, "query"),
            candidates=to_matrix(candidates, "candidates", allow_vector=False),
            n=check_count(n),
            **opts,
        )
        return _selection(self._call(self._stub.Select, request, timeout))

    def select_batch(
        self,
        queries: Any,
        candidates: Any,
        n: int,
        *,
        strategy: str = DEFAULTS.strategy,
        lam: float = DEFAULTS.lam,
        alpha: float | None = DEFAULTS.alpha,
        unique: bool = DEFAULTS.unique,
        normalize: bool = DEFAULTS.normalize,
        diversity: float = DEFAULTS.diversity,
        seed: int | None = DEFAULTS.seed,
        timeout: float | None = None,
        options: SelectOptions | None = None,
    ) -> list[Any]:
        """One selection per query, in input order; ``candidates`` is shared (K, d) or a list."""
        opts = request_options(n, options, strategy=strategy, lam=lam, alpha=alpha,
                               unique=unique, normalize=normalize, diversity=diversity,
                               seed=seed)  # fmt: skip
        qs = self._queries(queries)
        per_query = is_per_prompt(candidates)
        if per_query and len(candidates) != len(qs):
            raise errors.InvalidInputError(
                f"{len(qs)} queries but {len(candidates)} candidate sets"
            )
        shared = None if per_query else to_matrix(candidates, "candidates", allow_vector=False)
        n = check_count(n)
        check_batch_dims(qs, candidates if per_query else None)
        out: list[Any] = []
        for start in range(0, len(qs), self._batch_size):
            stop = min(start + self._batch_size, len(qs))
            requests = [
                pb.SelectRequest(
                    query=to_matrix(qs[i], f"queries[{i}]"),
                    candidates=(
                        to_matrix(candidates[i], f"candidates[{i}]", allow_vector=False)
                        if per_query
                        else None
                    ),
                    n=n,
                    **opts,
                )
                for i in range(start, stop)
            ]
            batch = pb.SelectBatchRequest(requests=requests, shared_candidates=shared)
            resp = self._call(self._stub.SelectBatch, batch, timeout)
            out.extend(_selection(r) for r in resp.responses)
        return out

    @staticmethod
    def _queries(queries: Any) -> list[Any]:
        if isinstance(queries, (list, tuple)):
            return list(queries)
        if hasattr(queries, "detach") or isinstance(queries, np.ndarray):
            arr = (
                as_float32_matrix(queries, "queries", finite=False)
                if np.ndim(queries) < 3
                else queries
            )
            return [arr[i] for i in range(arr.shape[0])]
        raise errors.InvalidInputError(
            f"queries must be a list of arrays or an array, got {type(queries).__name__}"
        )

    # --- one-hop recall + selection ---------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: Any,
        k: int = 200,
        n: int = 50,
        *,
        strategy: str = DEFAULTS.strategy,
        lam: float = DEFAULTS.lam,
        alpha: float | None = DEFAULTS.alpha,
        unique: bool = DEFAULTS.unique,
        normalize: bool = DEFAULTS.normalize,
        diversity: float = DEFAULTS.diversity,
        seed: int | None = DEFAULTS.seed,
        filter: Any = None,
        both_directions: bool = DEFAULTS.both_directions,
        with_payload: bool = False,
        timeout: float | None = None,
        options: SelectOptions | None = None,
    ) -> RecallResult:
        """The server recalls ``k`` points of ``collection`` for ``query`` and picks ``n`` (the
        ``Recall`` RPC): the picks, like ``SiftClient.search``, not a store's ``recall``
        candidates."""
        opts = request_options(n, options, strategy=strategy, lam=lam, alpha=alpha,
                               unique=unique, normalize=normalize, diversity=diversity,
                               seed=seed)  # fmt: skip
        request = pb.RecallRequest(
            collection=collection,
            query=to_matrix(query, "query"),
            k=check_count(k, "k"),
            n=check_count(n),
            both_directions=bool(both_directions),
            with_payload=bool(with_payload),
            **opts,
        )
        if filter is not None:
            request.filter.CopyFrom(filter_to_proto(filter))
        resp = self._call(self._stub.Recall, request, timeout)
        points = resp.points
        return RecallResult(
            ids=[id_from_proto(p.point_id, p.id) for p in points],
            scores=np.asarray([p.score for p in points], dtype=np.float32),
            variances=np.asarray([p.variance for p in points], dtype=np.float32),
            candidate_indices=np.asarray([p.candidate_index for p in points], dtype=np.int64),
            payloads=[payload_from_proto(p.payload) for p in points] if with_payload else None,
            prior_variance=float(resp.prior_variance),
            stopped_early=bool(resp.stopped_early),
            recalled=int(resp.recalled),
            strategy=resp.strategy,
        )

    def recall(self, *args: Any, **kwargs: Any) -> RecallResult:
        """Deprecated name of :meth:`search` (a store's ``recall`` returns candidates; this
        returns picks)."""
        warnings.warn(
            "RemoteReranker.recall is deprecated; use RemoteReranker.search (same arguments)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.search(*args, **kwargs)

    # --- texts: the server embeds ----------------------------------------------------------------

    def rerank_texts(
        self,
        query: str,
        documents: Sequence[str],
        n: int | None = None,
        *,
        strategy: str | None = None,
        lam: float | None = None,
        alpha: float | None = None,
        unique: bool | None = None,
        diversity: float | None = None,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Pick ``n`` of ``documents`` (texts) for ``query`` with the server's embedder
        (``RerankTexts``); ``n=None`` ranks every document.

        Returns the :class:`~qdrant_sift.reranker._text.TextOutcome` that the server's
        in-process ``TextReranker.rerank`` returns for the same call (picks in selection order
        with ``relevance_score``, ``gain`` and ``variance``; ``prior_variance``,
        ``stopped_early``, ``strategy`` and how many texts were embedded, cached or stored);
        scores travel as float32. Unset options take the text defaults (``unique=True``: each
        document at most once). Bad input raises what the in-process call raises: the call's
        own mistakes are caught here before sending, the server's limits come back as
        :class:`~qdrant_sift.errors.ServerLimitError` naming the limit.
        """
        from ._text import Pick, TextOutcome, check_text_call

        options = {"strategy": strategy, "lam": lam, "alpha": alpha, "unique": unique,
                   "diversity": diversity, "seed": seed}  # fmt: skip
        docs, top_n, opts, unique_like = check_text_call(query, documents, n, options)
        if top_n is not None and unique_like:
            top_n = min(top_n, len(docs))  # what the server does; keeps huge n encodable
        if top_n is not None and top_n >= 2**32:
            raise errors.ServerLimitError(f"top_n={top_n} exceeds the server limit max_n", "max_n")
        request = pb.RerankTextsRequest(
            query=query, documents=docs, strategy=strategy_to_proto(opts["strategy"])
        )
        if top_n is not None:
            request.top_n = top_n
        for name in ("lam", "alpha", "diversity", "unique", "seed"):
            if options[name] is not None:
                setattr(request, name, opts[name])
        resp = self._call(self._stub.RerankTexts, request, timeout)
        picks = [
            Pick(int(r.index), float(r.relevance_score), float(r.gain), float(r.variance))
            for r in resp.results
        ]
        return TextOutcome(
            picks, float(resp.prior_variance), bool(resp.stopped_early), resp.strategy,
            int(resp.embedded), int(resp.cache_hits), int(resp.stored_hits),
        )  # fmt: skip

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The server's health status name (``SERVING``, ``NOT_SERVING``, ...)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=service)
        resp = self._call(stub.Check, request, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    # --- transport ----------------------------------------------------------------------------

    def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any:
        if self._closed:
            raise errors.RerankerError("RemoteReranker is closed")
        rid = uuid.uuid4().hex
        metadata = (("x-request-id", rid), *self._auth)
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                return rpc(request, timeout=timeout or self._timeout, metadata=metadata)
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.UNAVAILABLE and attempt < self._retries:
                    time.sleep(min(delay, self._max_backoff) * random.uniform(0.5, 1.5))
                    delay *= 2
                    continue
                raise call_error(exc, self.target, rid, attempt + 1) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> RemoteReranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteReranker({self.target!r})"
