"""SIFT selection (in-process, CPU or CUDA) and the gRPC reranker service.

``select`` / ``select_batch`` pick N of K candidate vectors for a prompt with exact greedy SIFT
(or a baseline); ``LocalReranker`` binds them to a device, the in-process twin of the gRPC
client. The names load lazily (PEP 562): importing this package, or a light submodule such as
``_cmd_serve`` (whose ``--help`` must be quick), imports neither torch nor grpc; the first use of
a name imports the submodule that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._remote import RecallResult, RemoteReranker
    from ._select import (
        STRATEGIES,
        LocalReranker,
        Reranker,
        Selection,
        select,
        select_batch,
    )
    from ._server import ServerHandle, build_server, serve

__all__ = [
    "STRATEGIES",
    "LocalReranker",
    "RecallResult",
    "RemoteReranker",
    "Reranker",
    "Selection",
    "ServerHandle",
    "build_server",
    "select",
    "select_batch",
    "serve",
]

_SOURCES: dict[str, str] = {
    "RecallResult": "._remote",
    "RemoteReranker": "._remote",
    "STRATEGIES": "._select",
    "LocalReranker": "._select",
    "Reranker": "._select",
    "Selection": "._select",
    "select": "._select",
    "select_batch": "._select",
    "ServerHandle": "._server",
    "build_server": "._server",
    "serve": "._server",
}


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access and cache the attribute."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
