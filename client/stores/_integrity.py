"""What an Edge shard should hold, kept beside it, and the checks that notice when it does not.

Qdrant Edge recovers from a crash by replaying its write-ahead log, but a damaged segment or a
lost log can make it open a shard with points silently missing (a truncated id tracker loses
the points it no longer maps; an emptied version file or a deleted WAL after a crash loses
all), and some damage makes the engine abort the process (SIGABRT) while loading. The engine's
robustness is upstream's; noticing is ours. :class:`ShardManifest` lives in
``<shard>/qdrant_sift.manifest.json`` and holds:

* ``points`` and ``ids_digest``: the exact point count and an order-independent digest of the id
  set (the sum of a 128-bit BLAKE2b of every id, so a write updates it without a scan);
  recorded after every write the engine acknowledged; ``pending`` holds the state a write in
  progress will leave, so a crash mid-write is no false alarm while a write lost after it was
  acknowledged (a log deleted after a crash) is noticed;
* ``clean``: the store was closed after a successful flush; then ``files`` holds the size of
  every segment file and a BLAKE2b of each metadata-sized one (id tracker, versions, configs,
  status files; up to :data:`HASH_LIMIT` bytes), checked *before* the engine reads them;
* ``sources``: every distinct ``source`` payload the store was given, so the repair (drop and
  re-ingest) can be exact.

What is protected, and how: after a clean close, any truncated, emptied, deleted or rewritten
metadata file and any resized data file is refused before the engine loads it, so it can
neither abort the process nor lose points silently. After a crash (no clean close) the shard is
first loaded in a short-lived subprocess (:func:`probe_load`), so an engine abort kills only the
probe; then it is loaded here and its count and id digest are compared with the manifest. Not
protected: bytes changed inside a large data file (vectors, payload pages) without a change of
size, which alters stored values but not which points exist, and damage done while the shard is
open (the engine owns the files then). A shard written before manifests existed is adopted as it
is, with nothing to compare against.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HASH_LIMIT",
    "MANIFEST_NAME",
    "IdState",
    "ShardManifest",
    "fingerprint",
    "id_hash",
    "probe_load",
]

#: Our own files in a shard folder start with this (the fingerprint covers the engine's only).
OWN_PREFIX = "qdrant_sift."
MANIFEST_NAME = f"{OWN_PREFIX}manifest.json"
#: Files up to this size are hashed at a clean close (metadata); larger ones by size only.
HASH_LIMIT = 16 * 1024 * 1024
#: Preallocated bulk files the engine sizes itself; damage inside them is not looked for.
_BULK_PREFIXES = ("chunk_", "page_")
_MOD = 1 << 128
_FORMAT = 1


def id_hash(pid: int | str) -> int:
    """128-bit hash of one normalized point id (an int or a canonical UUID string)."""
    key = f"i:{pid}" if isinstance(pid, int) else f"u:{pid}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little")


@dataclass(frozen=True)
class IdState:
    """How many points, and which (as a digest of the id set)."""

    points: int = 0
    ids_digest: int = 0

    def add(self, ids: Iterable[int | str]) -> IdState:
        ids = list(ids)
        digest = (self.ids_digest + sum(id_hash(i) for i in ids)) % _MOD
        return IdState(self.points + len(ids), digest)

    def remove(self, ids: Iterable[int | str]) -> IdState:
        ids = list(ids)
        digest = (self.ids_digest - sum(id_hash(i) for i in ids)) % _MOD
        return IdState(self.points - len(ids), digest)

    @classmethod
    def of(cls, ids: Iterable[int | str]) -> IdState:
        return cls().add(ids)

    def to_json(self) -> dict[str, Any]:
        return {"points": self.points, "ids_digest": f"{self.ids_digest:032x}"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdState:
        return cls(int(data["points"]), int(str(data["ids_digest"]), 16))


@dataclass
class ShardManifest:
    """The manifest's contents; see the module docstring."""

    state: IdState = field(default_factory=IdState)
    pending: IdState | None = None
    clean: bool = False
    files: dict[str, list[Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    #: token of the vector cache saved by this clean close (see ``_vcache``); None: none saved
    vcache: str | None = None
    #: what made the stored kernel vectors (``Layout.kernel_id``); None: not recorded
    kernel: str | None = None

    @classmethod
    def read(cls, shard_dir: Path) -> ShardManifest | None:
        """The manifest, None when there is none; ValueError when it cannot be parsed."""
        path = shard_dir / MANIFEST_NAME
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"unknown manifest format in {path}")
        return cls(
            state=IdState.from_json(data["state"]),
            pending=IdState.from_json(data["pending"]) if data.get("pending") else None,
            clean=bool(data.get("clean", False)),
            files={str(k): list(v) for k, v in dict(data.get("files") or {}).items()},
            sources=[str(s) for s in data.get("sources") or []],
            vcache=str(data["vcache"]) if data.get("vcache") else None,
            kernel=str(data["kernel"]) if data.get("kernel") else None,
        )

    def write(self, shard_dir: Path, *, durable: bool = False) -> None:
        """Replace the manifest atomically (write a temporary file, then rename over it)."""
        data = {
            "format": _FORMAT,
            "state": self.state.to_json(),
            "pending": self.pending.to_json() if self.pending else None,
            "clean": self.clean,
            "files": self.files,
            "sources": self.sources,
            "vcache": self.vcache,
            "kernel": self.kernel,
        }
        path = shard_dir / MANIFEST_NAME
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            fd = os.open(shard_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def name() -> str:
        return MANIFEST_NAME


def _tracked(shard_dir: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(shard_dir):
        rel_root = Path(root).relative_to(shard_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d != "wal"]  # replayed only up to the last flush
        for name in files:
            if rel_root == Path(".") and name.startswith(OWN_PREFIX):
                continue  # ours (manifest, saved vector cache), not the engine's
            yield Path(root) / name


def fingerprint(shard_dir: Path) -> dict[str, list[Any]]:
    """``{relative path: [size, blake2b hex or None]}`` of every file of the closed shard."""
    out: dict[str, list[Any]] = {}
    for path in _tracked(shard_dir):
        size = path.stat().st_size
        digest = None
        if size <= HASH_LIMIT and not path.name.startswith(_BULK_PREFIXES):
            h = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
        out[path.relative_to(shard_dir).as_posix()] = [size, digest]
    return out


def fingerprint_mismatch(shard_dir: Path, expected: dict[str, list[Any]]) -> str | None:
    """What differs from the fingerprint taken at the last clean close (None: nothing)."""
    for rel, (size, digest) in sorted(expected.items()):
        path = shard_dir / rel
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} has {actual} bytes, {size} at the last clean close"
        if digest is not None:
            h = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != digest:
                return f"{rel} was modified after the last clean close"
    return None


_PROBE = (
    "import sys, qdrant_edge as qe\n"
    "s = qe.EdgeShard.load(sys.argv[1])\n"
    "n = s.count(qe.CountRequest(exact=True))\n"
    "s.close()\n"
    "print(n)\n"
)


def probe_load(shard_dir: Path, timeout: float = 120.0) -> str | None:
    """Load the shard in a subprocess; None if it loaded, else what happened to the probe.

    An engine abort (SIGABRT) or crash there costs a subprocess, not the caller's process.
    A Python-level load error is reported as None: the in-process load raises it typed.
    """
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "0")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(shard_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading it did not finish within {timeout:.0f} s"
    except OSError as exc:  # cannot start a subprocess: no protection, load in-process
        with contextlib.suppress(Exception):
            sys.stderr.write(f"qdrant-sift: cannot probe {shard_dir} in a subprocess: {exc}\n")
        return None
    if proc.returncode < 0:
        import signal

        name = signal.Signals(-proc.returncode).name
        tail = proc.stderr.strip().splitlines()[:1]
        return f"the Qdrant Edge engine died with {name} loading it" + (
            f" ({tail[0][:200]})" if tail else ""
        )
    return None
