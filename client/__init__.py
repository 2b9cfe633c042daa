"""Client side of qdrant-sift: stores, embedders, ingestion, ``SiftClient`` and the CLI.

Importing this package never imports torch; heavy parts load on first use.
"""

from __future__ import annotations

__all__: list[str] = []
