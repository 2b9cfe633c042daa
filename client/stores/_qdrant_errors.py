"""How a :class:`~._qdrant.QdrantStore` reports what qdrant-client raises: every failure of
the server, of local mode or of gRPC becomes one of :mod:`qdrant_sift.errors` (a missing
collection, an unreachable or refusing server, anything else as a :class:`StoreError`), chained
to the client's own. Apart from :mod:`._qdrant` (opening, writes, reads) so that each reads as
one concern.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from qdrant_sift.errors import (
    CollectionNotFoundError,
    QdrantSiftError,
    StoreError,
    StoreUnavailableError,
)

__all__ = ["QdrantErrorsBase"]

_HINT = (
    "start one (docker compose -f deploy/docker-compose.yml up -d qdrant), point QDRANT_URL at "
    "a running server, or use the embedded store (--store edge / EdgeStore)"
)


class QdrantErrorsBase:
    """The store's error translation (a base of :class:`~._qdrant.QdrantStore`, whose
    ``__init__`` sets ``collection`` and ``_where``, the Qdrant it reached, for the messages)."""

    collection: str
    _where: str

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            yield
        except QdrantSiftError:
            raise
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                raise self._not_found() from exc
            if exc.status_code in (401, 403):
                raise StoreUnavailableError(
                    f"Qdrant at {self._where} refused access ({exc.status_code}); check "
                    "QDRANT_API_KEY"
                ) from exc
            raise StoreError(f"Qdrant at {self._where} answered {exc.status_code}: {exc}") from exc
        except ResponseHandlingException as exc:
            raise StoreUnavailableError(
                f"cannot reach Qdrant at {self._where} ({exc}); {_HINT}"
            ) from exc
        except ValueError as exc:  # local mode
            if "not found" in str(exc).lower():
                raise self._not_found() from exc
            raise StoreError(f"Qdrant ({self._where}): {exc}") from exc
        except Exception as exc:
            code = getattr(exc, "code", None)
            name = getattr(code() if callable(code) else None, "name", "")
            if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise StoreUnavailableError(
                    f"cannot reach Qdrant at {self._where} over gRPC; {_HINT}"
                ) from exc
            if name == "NOT_FOUND":
                raise self._not_found() from exc
            if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise StoreUnavailableError("Qdrant refused access; check QDRANT_API_KEY") from exc
            # anything else the client raises (RuntimeError, KeyError, grpc errors, ...) stays
            # inside the one error tree, chained
            raise StoreError(f"Qdrant ({self._where}): {type(exc).__name__}: {exc}") from exc

    def _not_found(self) -> CollectionNotFoundError:
        return CollectionNotFoundError(
            f"collection {self.collection!r} does not exist in {self._where}; create it or ingest"
        )
