"""SIFT selection (in-process, CPU or CUDA) and the gRPC reranker service.

``select`` / ``select_batch`` pick N of K candidate vectors for a prompt with exact greedy SIFT
(or a baseline); ``LocalReranker`` binds them to a device, the in-process twin of the gRPC
client. The names load lazily (PEP 562): importing this package, or a light submodule such as
``_cmd_serve`` (whose ``--help`` must be quick), imports neither torch nor grpc; the first use of
a name imports the submodule that defines it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_sift._lazy import lazy_attributes

if TYPE_CHECKING:
    from qdrant_sift.options import DEFAULTS, SelectOptions

    from ._gains import relative_gains
    from ._limits import Limits
    from ._local import LocalReranker
    from ._protocol import Reranker
    from ._remote import RecallResult, RemoteReranker
    from ._select import STRATEGIES, Selection, select, select_batch
    from ._server import ServerHandle, build_server, serve
    from ._sift_compiled import compiled_available
    from ._text import TextReranker

__all__ = [
    "DEFAULTS",
    "STRATEGIES",
    "Limits",
    "LocalReranker",
    "RecallResult",
    "RemoteReranker",
    "Reranker",
    "SelectOptions",
    "Selection",
    "ServerHandle",
    "TextReranker",
    "build_server",
    "compiled_available",
    "relative_gains",
    "select",
    "select_batch",
    "serve",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    globals(),
    {
        "qdrant_sift.options": ["DEFAULTS", "SelectOptions"],
        "._gains": ["relative_gains"],
        "._limits": ["Limits"],
        "._local": ["LocalReranker"],
        "._protocol": ["Reranker"],
        "._remote": ["RecallResult", "RemoteReranker"],
        "._select": ["STRATEGIES", "Selection", "select", "select_batch"],
        "._server": ["ServerHandle", "build_server", "serve"],
        "._sift_compiled": ["compiled_available"],
        "._text": ["TextReranker"],
    },
)
