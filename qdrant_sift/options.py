"""The selection defaults, in one place: every entry point (``select``, ``LocalReranker``,
``RemoteReranker`` and the wire codec, ``SiftClient``, the RAG adapters, the CLI) takes its
defaults from :data:`DEFAULTS`, so in-process and remote calls cannot drift apart.

Why these values is in ``docs/eval``: λ is SIFT's noise variance; larger λ weighs relevance more
against diversity (and allows repeats of the most informative chunk), smaller λ the reverse.
Torch-free, so the client side can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULTS", "SelectOptions"]


@dataclass(frozen=True)
class SelectOptions:
    """Default selection options (validation stays with the selector, which sees the data)."""

    strategy: str = "sift"
    lam: float = 0.01
    alpha: float | None = None
    unique: bool = False
    diversity: float = 0.5
    seed: int | None = None
    both_directions: bool = True


#: The defaults every entry point uses.
DEFAULTS = SelectOptions()
