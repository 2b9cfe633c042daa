"""Keeping a collection in sync with its sources, with no database beside the collection.

Every point that ingest writes carries, in its payload, its source's id (``source_id``), a hash
of the source's bytes and of the settings that shape its chunks (``source_hash``), and how many
points that version of the source has (``source_chunks``). One scroll over those three fields
tells, per source, which points are stored and whether they are one complete version:

* **unchanged**: every stored point has the current hash and there are ``source_chunks`` of
  them. Nothing is read past the hash, nothing chunked, nothing embedded.
* **changed** (or a version interrupted half-way): its new chunks are written first; points the
  new version does not produce are deleted only after that write, so a crash in between leaves
  old and new text findable, never neither, and the rerun finishes the job. A chunk whose id is
  already stored (same source, position and content) keeps its vector: it is re-upserted with
  the new payload and not embedded again (plain layout; a collection with a kernel re-embeds).

Ids are UUIDv5 of (source id, position, sha256 of the chunk text) under :data:`ID_NAMESPACE`.
Collections written before this scheme (ids from the absolute path, no ``source_hash``) are
detected and refused with the way out (``--recreate``, or ``qdrant-sift migrate-ids``: see
:mod:`._migrate`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qdrant_sift.errors import DimensionMismatchError, LegacyIdsError

from .stores._base import PointId, VectorStore

__all__ = [
    "CLEANUP_MODES",
    "ID_NAMESPACE",
    "LEGACY_NAMESPACE",
    "SYNC_FIELDS",
    "IngestReport",
    "StoredSource",
    "Writer",
    "check_legacy",
    "chunk_id",
    "is_legacy",
    "legacy_chunk_id",
    "legacy_error",
    "position",
    "scan",
    "settings_key",
    "source_hash",
]

#: ``cleanup=`` values, as LangChain's ``index()``: None/"none" appends, "incremental" replaces
#: changed sources, "full" also removes sources in scope that no longer exist.
CLEANUP_MODES: tuple[str, ...] = ("none", "incremental", "full")
#: Namespace of every chunk id; changing it would orphan every stored collection.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/qdrant-sift/chunk/v2")
#: The namespace of the first id scheme (absolute path, chunk index, content); migration only.
LEGACY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/qdrant-sift/chunk")
#: Payload fields that carry a source's state (indexed as keywords where the backend indexes).
SYNC_FIELDS: tuple[str, ...] = ("source_id", "source_hash", "source_chunks")


def chunk_id(source_id: str, position: str | int, text: str) -> str:
    """Deterministic point id: same source id, position and content → same id, on any machine."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(uuid.uuid5(ID_NAMESPACE, f"{source_id}\x00{position}\x00{digest}"))


def legacy_chunk_id(source: str, chunk_index: int, text: str) -> str:
    """The id the first scheme gave a chunk (``source`` was the absolute resolved path)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(uuid.uuid5(LEGACY_NAMESPACE, f"{source}\x00{chunk_index}\x00{digest}"))


def position(part: str | None, index: int) -> str:
    """A chunk's position in its source: ``"3"``, or ``"12:0"`` (JSONL line 12), ``"p2:1"``."""
    return f"{part}:{index}" if part else str(index)


# --- the report ------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What one ingest run did (or, with ``dry_run``, would do).

    Sources: ``sources_added`` / ``_changed`` / ``_unchanged`` / ``_deleted``, and ``skipped``
    (path, reason) for every file or record left out. Chunks: ``chunks`` in the sources seen,
    ``upserted`` written (``embedded`` of them embedded, ``reused`` keeping their stored vector),
    ``skipped_existing`` already stored as they are, ``chunks_deleted``. ``planned`` lists the
    source ids added, changed and deleted.
    """

    files_read: int = 0
    records_read: int = 0
    chunks: int = 0
    upserted: int = 0
    skipped_existing: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    sources_added: int = 0
    sources_changed: int = 0
    sources_unchanged: int = 0
    sources_deleted: int = 0
    chunks_deleted: int = 0
    embedded: int = 0
    reused: int = 0
    cleanup: str = "incremental"
    dry_run: bool = False
    planned: dict[str, list[str]] = field(
        default_factory=lambda: {"added": [], "changed": [], "deleted": []}
    )

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)

    @property
    def sources_failed(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (``--json``)."""
        out = asdict(self)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        lines = [
            f"sources: {self.sources_added} added, {self.sources_changed} changed, "
            f"{self.sources_unchanged} unchanged, {self.sources_deleted} deleted, "
            f"{len(self.skipped)} skipped (cleanup={self.cleanup}"
            + (", dry run)" if self.dry_run else ")"),
            f"chunks: {self.chunks} in {self.files_read} files ({self.records_read} records); "
            f"{self.upserted} {would}upserted ({self.embedded} embedded, {self.reused} kept "
            f"their vectors), {self.skipped_existing} already stored, {self.chunks_deleted} "
            f"{would}deleted; {self.seconds:.1f} s",
        ]
        if self.dry_run:
            for what in ("added", "changed", "deleted"):
                lines += [f"  {what} {sid}" for sid in self.planned[what][:50]]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  … and {len(self.skipped) - 20} more")
        return "\n".join(lines)


# --- what is stored --------------------------------------------------------------------------


@dataclass
class StoredSource:
    """One source's points as stored: id → ``source_hash``, and the ``source_chunks`` they
    declare (the smallest, so a mixture never looks complete)."""

    ids: dict[PointId, str] = field(default_factory=dict)
    chunks: int = -1

    def unchanged(self, source_hash: str) -> bool:
        """One complete version with this hash is stored."""
        return len(self.ids) == self.chunks and all(h == source_hash for h in self.ids.values())


def is_legacy(payload: dict[str, Any]) -> bool:
    """A chunk written by the first id scheme: ``text`` and ``chunk_index``, no ``source_hash``."""
    return "text" in payload and "chunk_index" in payload and "source_hash" not in payload


def scan(
    store: VectorStore, filter: Any = None, batch_size: int = 2048
) -> tuple[dict[str, StoredSource], int]:
    """(source id → :class:`StoredSource`, number of legacy points), in one scroll."""
    sources: dict[str, StoredSource] = {}
    legacy = 0
    keys = (*SYNC_FIELDS, "chunk_index")  # never the texts
    for p in store.scroll(batch_size=batch_size, filter=filter, payload_keys=keys):
        pl = p.payload
        sid = pl.get("source_id")
        if isinstance(sid, str) and "source_hash" in pl:
            s = sources.setdefault(sid, StoredSource())
            s.ids[p.id] = str(pl["source_hash"])
            n = pl.get("source_chunks")
            n = n if isinstance(n, int) and not isinstance(n, bool) else -1
            s.chunks = n if s.chunks == -1 and len(s.ids) == 1 else min(s.chunks, n)
        elif "chunk_index" in pl and "source_hash" not in pl:  # is_legacy, text not read
            legacy += 1
    return sources, legacy


def legacy_error(collection: str, n: int) -> LegacyIdsError:
    return LegacyIdsError(
        f"collection {collection!r} holds {n} chunk(s) written with the old id scheme (ids from "
        "absolute paths, no source_hash); new chunks would not replace them. Either start over: "
        f"qdrant-sift ingest PATH --collection {collection} --recreate, or convert it in place "
        f"(vectors kept): qdrant-sift migrate-ids --collection {collection} --root FOLDER "
        "(the folder you ingested from), then ingest as usual",
        count=n,
    )


def check_legacy(store: VectorStore, sample: int = 256) -> None:
    """Refuse a collection of the old scheme (its first ``sample`` points, by id order)."""
    n = 0
    keys = ("chunk_index", "source_hash")
    for i, p in enumerate(store.scroll(batch_size=sample, payload_keys=keys)):
        if i >= sample:
            break
        n += "chunk_index" in p.payload and "source_hash" not in p.payload
    if n:
        raise legacy_error(store.collection, n)


# --- writing ---------------------------------------------------------------------------------


def _embed(embedder: Any, texts: list[str], what: str) -> np.ndarray:
    vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise DimensionMismatchError(
            f"{what} returned shape {vectors.shape} for {len(texts)} texts"
        )
    return vectors


class Writer:
    """Batches points to write, embeds only what has no stored vector, upserts, and deletes a
    source's stale points only after everything queued before them is written."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Any,
        report: IngestReport,
        batch_size: int,
        *,
        kernel_embedder: Any = None,
        dry_run: bool = False,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.embedder, self.report = store, embedder, report
        self.kernel_embedder = kernel_embedder
        self.batch_size, self.dry_run, self.on_batch = batch_size, dry_run, on_batch
        # a collection with a kernel needs both vectors on every upsert: nothing to reuse
        self.reuse = kernel_embedder is None and not dry_run and store.kernel_dim is None
        self.pending: dict[PointId, tuple[str, dict[str, Any], bool]] = {}
        self.deletes: list[PointId] = []

    def add(self, pid: PointId, text: str, payload: dict[str, Any], stored: bool) -> None:
        """Queue a point; ``stored``: its id is in the collection (with another payload)."""
        self.pending[pid] = (text, payload, stored)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def delete_after_write(self, ids: Sequence[PointId]) -> None:
        self.deletes.extend(ids)

    def flush(self) -> None:
        if self.pending:
            self._write()
        if self.deletes:
            if not self.dry_run:
                for i in range(0, len(self.deletes), 1000):
                    self.store.delete(self.deletes[i : i + 1000])
            self.report.chunks_deleted += len(self.deletes)
            self.deletes.clear()

    def _write(self) -> None:
        ids = list(self.pending)
        texts = [self.pending[i][0] for i in ids]
        kept: dict[PointId, np.ndarray] = {}
        if self.reuse:
            again = [i for i in ids if self.pending[i][2]]
            if again:
                kept = {
                    p.id: p.vector
                    for p in self.store.retrieve(again, with_vectors=True)
                    if p.vector is not None
                }
        if not self.dry_run:
            fresh = [k for k, i in enumerate(ids) if i not in kept]
            rows: list[np.ndarray | None] = [kept.get(i) for i in ids]
            if fresh:
                vecs = _embed(self.embedder, [texts[k] for k in fresh], "embedder")
                for j, k in enumerate(fresh):
                    rows[k] = vecs[j]
            matrix = np.stack([r for r in rows if r is not None]) if rows else None
            kernels = None
            if self.kernel_embedder is not None:
                kernels = _embed(self.kernel_embedder, texts, "kernel embedder")
            self.store.upsert(
                ids, matrix, [self.pending[i][1] for i in ids], kernel_vectors=kernels
            )
            self.report.embedded += len(fresh)
            self.report.reused += len(kept)
        self.report.upserted += len(ids)
        self.pending.clear()
        if self.on_batch is not None:
            self.on_batch()


def settings_key(chunking: str, metadata: dict[str, Any]) -> bytes:
    """What besides the bytes shapes a source's points: the chunking and the base metadata."""
    meta = json.dumps(metadata, sort_keys=True, default=str)
    return f"v2\x00{chunking}\x00{meta}\x00".encode()


def source_hash(data: bytes, settings: bytes) -> str:
    return hashlib.sha256(settings + data).hexdigest()[:32]
