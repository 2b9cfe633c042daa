"""PEM material for TLS, given as bytes or as a file path: one reader for the server and the client.

A path that cannot be read is a :class:`~qdrant_sift.errors.ConfigError` naming the option, so a
typo in ``--tls-cert`` or ``root_certificates=`` reads as a configuration mistake, not as a bare
``OSError`` from somewhere inside channel or server set-up.
"""

from __future__ import annotations

import os

from qdrant_sift.errors import ConfigError

__all__ = ["read_pem"]


def read_pem(value: bytes | str | os.PathLike[str], option: str) -> bytes:
    """``value`` itself when it is bytes, else the bytes of the file it names."""
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {os.fspath(value)!r}: {exc.strerror}") from exc
