"""The Edge shard's life under an :class:`~._edge.EdgeStore`: lock, open, verify, record.

Kept apart from the store's reads and writes because it is one concern with its own rules: one
process owns a folder (an advisory lock beside it); every shard carries a manifest (point count,
id-set digest, file fingerprints at a clean close; see :mod:`._integrity`), and a shard that does
not match it is damaged until :meth:`~._edge.EdgeStore.drop` (the repair, then re-ingest); every
engine exception reaches the caller as a ``StoreError`` (:meth:`EdgeShardBase._engine`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qdrant_sift.errors import (
    CollectionNotFoundError,
    QdrantSiftError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
)

from ._hits import PointId
from ._integrity import IdState, ShardManifest, fingerprint_mismatch, probe_load
from ._layout import Layout, read_layout
from ._points import normalize_ids
from ._vcache import VectorCache

__all__ = ["MAX_SOURCES", "EdgeShardBase", "edge_id", "edge_ids"]

#: Sources kept in the manifest for an exact repair; beyond this the list says it is partial.
MAX_SOURCES = 10_000
_JSONL_LINE = re.compile(r"^(.+\.jsonl):\d+$")


def edge_id(pid: PointId) -> Any:
    """A normalised point id (:func:`normalize_id`) as the engine takes it: as it is. The
    binding parses a canonical UUID string itself (its ``UuidStr`` id), so nothing builds a
    ``uuid.UUID`` here (a Python object, ~1 µs each: 50 of them in a SIFT search's ``retrieve``)."""
    return pid


def edge_ids(pids: list[PointId]) -> list[Any]:
    """Normalised ids as the engine takes them, :func:`edge_id` of each: the list as it is."""
    return pids


class EdgeShardBase:
    """Locking, opening, verification and bookkeeping of one Edge shard (the engine's handle
    ``_shard``, its ``_layout``, id ``_state`` and manifest ``_sources``); set up by
    :class:`~._edge.EdgeStore`'s ``__init__``."""

    collection: str
    root: Path
    shard_dir: Path
    _shard: Any
    _layout: Layout | None
    _lock_fd: int | None
    _damage: StoreCorruptedError | None
    _state: IdState
    _sources: list[str]
    _kernel_id: str | None  # what made the stored kernel vectors (the manifest's ``kernel``)
    _write_lock: threading.RLock
    _probe: bool
    _vcache: VectorCache | None
    _vcache_saved: str | None  # token of saved files that match the shard
    _vcache_token: str | None  # token of the files the live copy was mapped from

    def _lock(self) -> None:
        """An advisory lock beside the shard: Edge's own WAL lock gives an unhelpful message."""
        lock_path = self.root / f".{self.collection}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreLockedError(
                f"{self.shard_dir} is open in another process (or another EdgeStore here); "
                "close it there, or serve the collection from a Qdrant server for shared access"
            ) from exc
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Every engine exception becomes a ``StoreError`` naming the shard, chained."""
        try:
            yield
        except QdrantSiftError:
            raise
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLockedError(f"{self.shard_dir} is open in another process") from exc
            raise StoreError(f"Edge {what} failed on {self.shard_dir}: {exc}") from exc

    def _damaged(self, what: str, cause: BaseException | None = None) -> None:
        """Record that the shard is damaged; every use but drop/close raises it from now on."""
        self._vcache = None
        self._vcache_saved = self._vcache_token = None
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        sources = tuple(self._sources)
        if sources:
            shown = " ".join(sources[:5]) + (" …" if len(sources) > 5 else "")
            command = (
                f"qdrant-sift ingest {shown} --collection {self.collection} --path {self.root} "
                "--recreate"
            )
            extra = "" if len(sources) <= 5 else f" (all {len(sources)} sources: see the manifest)"
            repair = f"{command}{extra}"
        else:
            repair = (
                f"qdrant-sift ingest SOURCES --collection {self.collection} --path {self.root} "
                "--recreate"
            )
        err = StoreCorruptedError(
            f"Edge shard {self.shard_dir} is damaged: {what}. Its points cannot be trusted. "
            f"Repair: drop it and re-ingest (chunk ids are deterministic, so the same points "
            f"come back): {repair}",
            shard=str(self.shard_dir),
            repair=repair,
            sources=sources,
        )
        if cause is not None:
            err.__cause__ = cause
        self._damage = err

    def _open(self) -> None:
        import qdrant_edge as qe

        try:
            manifest = ShardManifest.read(self.shard_dir)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            self._damaged(f"its manifest cannot be read ({exc})", exc)
            return
        if manifest is not None:
            self._sources = list(manifest.sources)
            self._kernel_id = manifest.kernel
        # After a clean close the files must be as fingerprinted then: then only the count is
        # checked. Otherwise (a crash, a changed file, no manifest) the shard is first loaded in
        # a subprocess, so an engine abort cannot take this process down, and then verified in
        # full: a write-ahead log replay may legitimately repair a changed file.
        suspect = None
        if manifest is not None and manifest.clean and manifest.files:
            try:
                suspect = fingerprint_mismatch(self.shard_dir, manifest.files)
            except OSError as exc:
                suspect = f"its files cannot be read ({exc})"
        fast = manifest is not None and manifest.clean and bool(manifest.files) and not suspect
        if not fast:
            if self._probe:
                died = probe_load(self.shard_dir)
                if died:
                    self._damaged(died + (f"; {suspect}" if suspect else ""))
                    return
            elif suspect:  # no probe: refuse rather than risk an engine abort in-process
                self._damaged(suspect)
                return
        try:
            self._shard = qe.EdgeShard.load(str(self.shard_dir))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLockedError(f"{self.shard_dir} is open in another process") from exc
            self._damaged(f"the engine cannot load it ({exc})", exc)
            return
        try:
            if manifest is None:  # written before manifests existed: adopt it as it is
                self._state = self._scan()
            elif fast:
                count = self._count()
                if count != manifest.state.points:
                    self._damaged(f"it holds {count} points, {manifest.state.points} were written")
                    return
                self._state = manifest.state
            else:
                actual = self._scan()
                allowed = [manifest.state] + ([manifest.pending] if manifest.pending else [])
                if actual not in allowed:
                    what = (
                        f"it holds {actual.points} points, {manifest.state.points} were written"
                        if actual.points != manifest.state.points
                        else f"it holds {actual.points} points as written, but not the same ids"
                    )
                    self._damaged(what + (f"; {suspect}" if suspect else ""))
                    return
                self._state = actual
            if fast and manifest is not None and manifest.vcache:
                self._vcache_saved = manifest.vcache
            else:  # a copy saved before a crash (or by no clean close) would only be refused
                VectorCache.discard(self.shard_dir)
            self._write_manifest()  # open: dirty until a clean close
        except StoreError as exc:
            self._damaged(f"reading it failed ({exc})", exc)

    def _scan(self) -> IdState:
        """The id state of the open shard, read from the engine (a scroll over ids only)."""
        import qdrant_edge as qe

        shard = self._shard
        ids: list[PointId] = []
        offset: Any = None
        with self._engine("scan"):
            while True:
                recs, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=10_000, with_payload=False, with_vector=False
                    )
                )
                ids.extend(normalize_ids([r.id for r in recs]))
                if offset is None:
                    break
        return IdState.of(ids)

    def _count(self) -> int:
        import qdrant_edge as qe

        with self._engine("count"):
            return int(self._shard.count(qe.CountRequest(exact=True)))

    def _write_manifest(
        self,
        pending: IdState | None = None,
        *,
        clean: bool = False,
        files: Any = None,
        vcache: str | None = None,
    ) -> None:
        ShardManifest(
            state=self._state,
            pending=pending,
            clean=clean,
            files=files or {},
            sources=self._sources,
            vcache=vcache,
            kernel=self._kernel_id,
        ).write(self.shard_dir, durable=clean)

    def _require(self) -> Any:
        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        if self._damage is not None:
            raise self._damage
        if self._shard is None:
            raise CollectionNotFoundError(
                f"no collection {self.collection!r} in {self.root}; create it or ingest first"
            )
        return self._shard

    def _load_layout(self) -> Layout:
        if self._layout is None:
            self._require()
            try:
                cfg = json.loads((self.shard_dir / "edge_config.json").read_text())
                vecs = {n: (int(v["size"]), str(v["distance"])) for n, v in cfg["vectors"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StoreError(f"cannot read {self.shard_dir}/edge_config.json: {exc}") from exc
            self._layout = read_layout(self.collection, vecs, None, self._kernel_id)
        return self._layout

    def _known(self, ids: list[PointId]) -> set[PointId]:
        """Which of ``ids`` the shard holds (ids only, no payloads or vectors)."""
        with self._engine("retrieve"):
            recs = self._shard.retrieve(edge_ids(ids), with_payload=False, with_vector=False)
        return set(normalize_ids([r.id for r in recs]))

    def _new_sources(self, payloads: list[dict[str, Any]]) -> list[str]:
        if len(self._sources) >= MAX_SOURCES:
            return []
        have = set(self._sources)
        out: list[str] = []
        for p in payloads:
            src = p.get("source")
            # ingest's source ids are relative (see note_sources); absolute ones are legacy
            if not isinstance(src, str) or not os.path.isabs(src):
                continue
            m = _JSONL_LINE.match(src)
            src = m.group(1) if m else src
            if src not in have:
                have.add(src)
                out.append(src)
        return out[: MAX_SOURCES - len(self._sources)]

    def _apply(self, operation: Any, after: IdState, what: str, sources: list[str]) -> None:
        """Record ``after`` as pending, apply ``operation``, then record ``after`` as written.

        A crash between the two manifest writes leaves both states acceptable on the next open;
        a crash after the second makes a lost write (a deleted log, say) detectable.
        """
        changed = after != self._state or bool(sources)
        if changed:
            self._manifest_or_error(pending=after)
        try:
            with self._engine(what):
                self._shard.update(operation)
        except StoreError:
            self._vcache = None  # rebuilt from the shard on the next recall
            with contextlib.suppress(StoreError, OSError):
                self._state = self._scan()  # whatever part of the write the engine kept
                self._write_manifest()
            raise
        self._state = after
        if changed:
            self._manifest_or_error()

    def _manifest_or_error(self, pending: IdState | None = None) -> None:
        try:
            self._write_manifest(pending=pending)
        except OSError as exc:
            raise StoreError(f"cannot write the manifest of {self.shard_dir}: {exc}") from exc
