"""Collection names: one rule for every backend and entry point, and the one way to turn a name
into a folder under a store root.

The rule is Qdrant's own (a name the server would refuse is refused here first, with the same
error on every backend): 1–255 characters, none of ``< > : " / \\ | ? *``, no NUL or other
control character. On top of that ``.`` and ``..`` are refused everywhere, because a name is
also a folder name for the embedded store. :func:`shard_path` then resolves the folder and
refuses one that is not a direct child of the resolved store root (a symlink planted in the
root, say), so no name can make a store create, write or delete anything outside its root.
"""

from __future__ import annotations

import os
from pathlib import Path

from qdrant_sift.errors import InvalidInputError

__all__ = ["MAX_COLLECTION_NAME", "shard_path", "validate_collection_name"]

#: Longest name Qdrant accepts (characters).
MAX_COLLECTION_NAME = 255
#: Characters Qdrant refuses in a collection name (besides control characters).
_FORBIDDEN = frozenset('<>:"/\\|?*')
#: Bytes a file name may have on the file systems we run on (NAME_MAX), less the ``.lock``
#: suffix and leading dot of the Edge lock file that sits beside each shard.
_EDGE_NAME_BYTES = 255 - len(".") - len(".lock")


def validate_collection_name(name: object) -> str:
    """``name`` if it is a valid collection name, else :class:`InvalidInputError` saying why."""
    if not isinstance(name, str):
        raise InvalidInputError(f"collection name must be a str, got {type(name).__name__}")
    if not name:
        raise InvalidInputError("collection name must not be empty")
    if len(name) > MAX_COLLECTION_NAME:
        raise InvalidInputError(
            f"collection name has {len(name)} characters; at most {MAX_COLLECTION_NAME} allowed"
        )
    if name in (".", ".."):
        raise InvalidInputError(f"collection name {name!r} is a path component, not a name")
    bad = sorted({c for c in name if c in _FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidInputError(
            f"collection name {name!r} contains forbidden characters {shown} "
            '(not allowed: < > : " / \\ | ? * and control characters)'
        )
    return name


def shard_path(root: str | os.PathLike[str], name: str) -> Path:
    """The resolved folder of collection ``name`` under the resolved ``root``.

    Raises :class:`InvalidInputError` when the name is invalid, too long for a file name beside
    its lock file, starts with a dot (reserved for the store's own files), or when the folder
    would resolve anywhere but directly inside ``root``.
    """
    validate_collection_name(name)
    if name.startswith("."):
        raise InvalidInputError(
            f"collection name {name!r} starts with '.'; such names are reserved for the "
            "embedded store's own files"
        )
    if len(os.fsencode(name)) > _EDGE_NAME_BYTES:
        raise InvalidInputError(
            f"collection name {name[:40]!r}… is {len(os.fsencode(name))} bytes; the embedded "
            f"store keeps each collection in a folder and allows at most {_EDGE_NAME_BYTES}"
        )
    base = Path(root).expanduser().resolve()
    folder = (base / name).resolve()
    if folder.parent != base or folder.name != name:
        raise InvalidInputError(
            f"collection {name!r} resolves to {folder}, outside the store root {base}; "
            "refusing to touch it"
        )
    return folder
