"""One documented exception tree for the whole package.

Every error the package raises on purpose is a :class:`QdrantSiftError`. Errors caused by the
caller's input also subclass :class:`ValueError`, and errors of the running system (a store that
cannot be reached, a failed fine-tuning step) also subclass :class:`RuntimeError`, so callers that
already catch the built-in types keep working.

::

    QdrantSiftError
    ├── InvalidInputError (ValueError)
    │   ├── DimensionMismatchError
    │   ├── NonFiniteError
    │   ├── ConfigError
    │   ├── PromptTooLongError
    │   └── ServerLimitError           a request exceeds a limit of the reranker service
    ├── StoreError (RuntimeError)
    │   ├── StoreUnavailableError
    │   ├── StoreLockedError
    │   ├── StoreCorruptedError
    │   ├── CollectionNotFoundError
    │   ├── EmptyCollectionError
    │   └── IngestError
    │       └── LegacyIdsError         a collection of the old chunk-id scheme (migrate-ids)
    ├── RerankerError (RuntimeError)
    │   ├── RerankerUnavailableError
    │   ├── SelectionCancelledError    cancelled, deadline passed, or the server shut down
    │   └── RemoteRerankerError        a service status with no class of its own (auth, overload)
    ├── ModelLoadError (RuntimeError)
    └── TuningError (RuntimeError)

The reranker service sends the class name of every error it raises in the ``x-sift-error``
trailer, and :class:`~qdrant_sift.reranker.RemoteReranker` raises that very class again, so a
call fails with the same class in-process and over gRPC.
"""

from __future__ import annotations

__all__ = [
    "CollectionNotFoundError",
    "ConfigError",
    "DimensionMismatchError",
    "EmptyCollectionError",
    "IngestError",
    "InvalidInputError",
    "LegacyIdsError",
    "ModelLoadError",
    "NonFiniteError",
    "PromptTooLongError",
    "QdrantSiftError",
    "RemoteRerankerError",
    "RerankerError",
    "RerankerUnavailableError",
    "SelectionCancelledError",
    "ServerLimitError",
    "StoreCorruptedError",
    "StoreError",
    "StoreLockedError",
    "StoreUnavailableError",
    "TuningError",
]


class QdrantSiftError(Exception):
    """Base of every error raised by qdrant-sift."""


# --- caller's input ---------------------------------------------------------------------------


class InvalidInputError(QdrantSiftError, ValueError):
    """The arguments cannot be used as given (shape, range, type)."""


class DimensionMismatchError(InvalidInputError):
    """Vectors whose dimensions disagree (query vs candidates, vectors vs collection)."""


class NonFiniteError(InvalidInputError):
    """An input array holds NaN or infinity."""


class ConfigError(InvalidInputError):
    """A configuration value is out of range or contradicts another one."""


class PromptTooLongError(InvalidInputError):
    """The prompt does not fit the language model's context window."""


class ServerLimitError(InvalidInputError):
    """A request exceeds one of the reranker service's configured limits; ``limit`` names it
    (``max_k``, ``max_cost``, ``max_message_bytes``, ...)."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit

    @classmethod
    def exceeded(cls, limit: str, value: int, maximum: int, what: str) -> ServerLimitError:
        """The error for ``what=value`` above ``limit=maximum``."""
        return cls(f"{what}={value} exceeds the server limit {limit}={maximum}", limit)


# --- storage ----------------------------------------------------------------------------------


class StoreError(QdrantSiftError, RuntimeError):
    """A vector store operation failed."""


class StoreUnavailableError(StoreError):
    """The Qdrant server cannot be reached."""


class StoreLockedError(StoreError):
    """An embedded store folder is already opened by another process."""


class StoreCorruptedError(StoreError):
    """An embedded shard does not hold what was written to it (files damaged or lost).

    ``shard`` is the folder; ``repair`` says how to restore it (drop it and re-ingest the
    sources, which ``sources`` lists when they are known).
    """

    def __init__(
        self,
        message: str,
        *,
        shard: str | None = None,
        repair: str | None = None,
        sources: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.shard = shard
        self.repair = repair
        self.sources = sources


class CollectionNotFoundError(StoreError):
    """The collection does not exist (create it or ingest first)."""


class EmptyCollectionError(StoreError):
    """The collection holds no points, so nothing can be recalled."""


class IngestError(StoreError):
    """Ingestion could not proceed (nothing was written for the failing batch)."""


class LegacyIdsError(IngestError):
    """The collection holds chunks written with the first id scheme (ids from absolute paths,
    no ``source_hash``); new chunks would not replace them, so ingest refuses to mix the two.
    Re-ingest with ``--recreate``, or convert in place with ``qdrant-sift migrate-ids``.
    ``count`` is how many such chunks were seen."""

    def __init__(self, message: str, count: int = 0) -> None:
        super().__init__(message)
        self.count = count


# --- reranking --------------------------------------------------------------------------------


class RerankerError(QdrantSiftError, RuntimeError):
    """Selection failed for a reason other than bad input."""


class RerankerUnavailableError(RerankerError):
    """The remote reranker cannot be reached (after retries)."""


class SelectionCancelledError(RerankerError):
    """A selection stopped between picks: its call was cancelled, its deadline passed, or the
    server shut down. ``reason`` is ``"cancelled"`` or ``"deadline"``."""

    def __init__(self, message: str, reason: str = "cancelled") -> None:
        super().__init__(message)
        self.reason = reason


class RemoteRerankerError(RerankerError):
    """The remote reranker answered with an error status."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# --- models and fine-tuning -------------------------------------------------------------------


class ModelLoadError(QdrantSiftError, RuntimeError):
    """A model or tokenizer could not be loaded (offline, wrong path, unsupported format)."""


class TuningError(QdrantSiftError, RuntimeError):
    """A test-time fine-tuning step failed; the adapter has been reset."""
