"""The in-process reranker: :func:`select` and :func:`select_batch` bound to a device and dtype.

Kept apart from :mod:`._select` (checking input and routing it to an engine): this is only the
object that lets a caller swap the in-process selection for the gRPC ``RemoteReranker``.
"""

from __future__ import annotations

from typing import Any

import torch

from qdrant_sift.errors import RerankerError

from ._parallel import check_threads
from ._select import select, select_batch
from ._selection import Selection
from ._validate import compute_dtype, resolve_device

__all__ = ["LocalReranker"]


class LocalReranker:
    """In-process reranker: :func:`select` / :func:`select_batch` bound to a device and dtype.

    The twin of the gRPC ``RemoteReranker``, so callers can swap one for the other.
    ``threads``: how many threads a CPU :meth:`select_batch` may use (see :func:`select_batch`;
    None: the CPUs this process may use).
    """

    def __init__(
        self, device: Any = None, dtype: Any = torch.float32, threads: int | None = None
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = compute_dtype(dtype)
        self.threads = check_threads(threads)
        self._closed = False

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise RerankerError("this LocalReranker is closed")
        kwargs.setdefault("device", self.device)
        kwargs.setdefault("dtype", self.dtype)
        return kwargs

    def select(self, query: Any, candidates: Any, n: int, **kwargs: Any) -> Selection:
        """:func:`select` on this reranker's device and dtype."""
        return select(query, candidates, n, **self._kwargs(kwargs))

    def select_batch(self, queries: Any, candidates: Any, n: int, **kwargs: Any) -> list[Selection]:
        """:func:`select_batch` on this reranker's device and dtype."""
        kwargs.setdefault("threads", self.threads)
        return select_batch(queries, candidates, n, **self._kwargs(kwargs))

    def close(self) -> None:
        """Release nothing (no remote resources) but refuse further calls, like the remote twin."""
        self._closed = True

    def __enter__(self) -> LocalReranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LocalReranker(device={str(self.device)!r}, dtype={self.dtype}, "
            f"threads={self.threads})"
        )
