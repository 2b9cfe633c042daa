"""Lazy package attributes (PEP 562), so importing a package never pays for torch up front.

``qdrant-sift --help`` imports every subcommand module, and each lives in a package whose names
need torch; resolving those names on first use keeps the CLI and ``qdrant_sift.client`` light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, namespace: dict[str, Any], sources: dict[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    ``sources`` maps a relative submodule (``"._select"``) to the names it defines (``"attr as
    name"`` renames); the first access imports the submodule and caches the value in the package
    ``namespace``.
    """
    origin: dict[str, tuple[str, str]] = {}
    for module, names in sources.items():
        for entry in names:
            attr, _, alias = (part.strip() for part in entry.partition(" as "))
            origin[alias or attr] = (module, attr)

    def __getattr__(name: str) -> Any:
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = origin[name]
        value = getattr(importlib.import_module(module, package), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(origin))

    return __getattr__, __dir__
