"""The reranker service's per-request limits and the work estimate they bound.

Torch-free and protobuf-free: the gRPC servicer, the text/HTTP endpoints and the ``serve`` CLI
share them. A violation raises :class:`~qdrant_sift.errors.ServerLimitError` naming the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from qdrant_sift.errors import ConfigError, InvalidInputError, ServerLimitError

__all__ = ["Limits", "check_cost", "check_limit", "check_n", "selection_cost"]


@dataclass(frozen=True)
class Limits:
    """Per-request bounds; a violation is INVALID_ARGUMENT naming the limit.

    Oversized messages are refused with RESOURCE_EXHAUSTED before they are parsed.
    ``max_cost`` caps the work of one call (see :func:`selection_cost`; the sum over a batch),
    checked before any work: sizes alone admit calls of minutes (K=2000, n=10000, d=384 is
    2·10¹¹, about 35 s of one core). The default, 5·10¹⁰, is about 8 s of one core. Defaults
    admit the paper's settings (K=200, N=50, d<=4096) with wide margins.
    """

    max_k: int = 50_000
    max_d: int = 8_192
    max_n: int = 10_000
    max_m: int = 1_024
    max_batch: int = 1_024
    max_recall_k: int = 10_000
    max_message_bytes: int = 64 * 1024 * 1024
    max_cost: int = 50_000_000_000
    #: Text reranking (HTTP and ``RerankTexts``): documents per call, characters per document.
    max_documents: int = 1_000
    max_document_chars: int = 100_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Limits.{name} must be a positive int, got {value!r}")


def check_limit(limit: str, value: int, maximum: int, what: str) -> None:
    """:class:`ServerLimitError` naming ``limit`` when ``value`` exceeds ``maximum``."""
    if value > maximum:
        raise ServerLimitError.exceeded(limit, value, maximum, what)


def check_n(n: int, limits: Limits, name: str = "n") -> int:
    """A wire ``n`` (unsigned, 0 means unset) within ``max_n``."""
    if n == 0:
        raise InvalidInputError(f"{name} must be >= 1, got 0")
    check_limit("max_n", n, limits.max_n, name)
    return n


def selection_cost(k: int, n: int, d: int, m: int = 1) -> int:
    """Work of one greedy selection in multiply-adds: n picks, each one kernel column over the
    K candidates and m targets ((K+m)·d) and its rank-n correction (at most n·(K+m))."""
    return int(n) * (int(k) + int(m)) * (int(d) + int(n))


def check_cost(cost: int, limits: Limits, what: str = "K·n·(d+n)") -> None:
    """:class:`ServerLimitError` naming ``max_cost`` when ``cost`` exceeds it (before any work)."""
    if cost > limits.max_cost:
        raise ServerLimitError(
            f"estimated work {what} = {cost:.3g} exceeds the server limit "
            f"max_cost={limits.max_cost:.3g}; ask for fewer picks (n) or candidates (K)",
            "max_cost",
        )
