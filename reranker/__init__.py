"""SIFT selection (in-process, CPU or CUDA) and the gRPC reranker service.

``select`` / ``select_batch`` pick N of K candidate vectors for a prompt with exact greedy SIFT
(or a baseline); ``LocalReranker`` binds them to a device, the in-process twin of the gRPC
client. Importing this package imports torch.
"""

from __future__ import annotations

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
