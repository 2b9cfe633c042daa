"""The reranker contract: what ``SiftClient``, ``rerank()`` and the RAG adapters need from a
selector. :class:`~qdrant_sift.reranker.LocalReranker` (in-process) and
:class:`~qdrant_sift.reranker.RemoteReranker` (gRPC) implement it.

Torch-free at run time (``Selection`` is only imported for type checkers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from qdrant_sift.options import SelectOptions

    from ._select import Selection

__all__ = ["Reranker"]


@runtime_checkable
class Reranker(Protocol):
    """What the client needs from a reranker, in-process (:class:`LocalReranker`) or remote
    (``RemoteReranker``): :func:`select` and :func:`select_batch` with the selection options as
    keywords (defaults from :data:`~qdrant_sift.options.DEFAULTS`) or as one ``options=``
    :class:`~qdrant_sift.options.SelectOptions`. Implementations may take
    more keywords (``device``, ``timeout``, ...)."""

    def select(
        self,
        query: Any,
        candidates: Any,
        n: int,
        *,
        strategy: str = ...,
        lam: float = ...,
        alpha: float | None = ...,
        unique: bool = ...,
        normalize: bool = ...,
        diversity: float = ...,
        seed: int | None = ...,
        options: SelectOptions | None = ...,
    ) -> Selection: ...

    def select_batch(
        self,
        queries: Any,
        candidates: Any,
        n: int,
        *,
        strategy: str = ...,
        lam: float = ...,
        alpha: float | None = ...,
        unique: bool = ...,
        normalize: bool = ...,
        diversity: float = ...,
        seed: int | None = ...,
        options: SelectOptions | None = ...,
    ) -> list[Selection]: ...
