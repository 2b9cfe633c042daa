"""Ingest files into a vector store and keep the collection in sync with them.

Read (text by content, HTML, PDF, JSONL, source code; see :mod:`._sources`), chunk by LM
tokens, embed in batches, upsert. A source's id is its path relative to the folder given (or
``source_id=``), so the same corpus gets the same ids wherever it sits; chunk ids derive from
(source id, position, content). Re-running is a no-op: a source whose bytes did not change is
neither chunked nor embedded. A changed source is replaced (new chunks first, then its stale
ones deleted) and, with ``cleanup="full"``, sources that vanished are removed, as LangChain's
``index()`` does, with the state kept in the points' own payloads (see :mod:`._sync`); how
one source is split and written is in :mod:`._source_chunks`.
An interrupted run (Ctrl-C, kill -9) resumes: what is stored is found by id, not redone.

A ``kernel_embedder`` (e.g. ``ModelEmbedder``, the language model's own hidden states) also
embeds every chunk into SIFT's kernel, stored as a second named vector beside the recall one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_sift.errors import ConfigError, InvalidInputError

from ._kernel import kernel_id_of
from ._migrate import migrate_ids
from ._source_chunks import chunk_payload, chunking_key, sync_source
from ._sources import NotRegular, ReadError, Skips, matches, read_bytes, walk
from ._sync import (
    CLEANUP_MODES,
    IngestReport,
    StoredSource,
    Writer,
    check_legacy,
    chunk_id,
    legacy_error,
    scan,
    settings_key,
    source_hash,
)
from .chunking import as_span_tokenizer, check_window
from .stores._base import VectorStore
from .stores._filters import Match

__all__ = [
    "CLEANUP_MODES",
    "IngestReport",
    "add_texts",
    "chunk_id",
    "ingest",
    "iter_files",
    "migrate_ids",
]


def iter_files(paths: Iterable[str | os.PathLike[str]], report: IngestReport) -> list[Path]:
    """Readable regular files under ``paths`` (folders recursively, hidden entries and
    symlinked folders skipped), deduplicated by resolved path; the rest is reported in
    ``report.skipped`` under its own path, never fatal."""
    skips = Skips()
    entries, _ = walk(paths, skips)
    report.skipped.extend(skips)
    return [Path(os.path.realpath(e.path)) for e in entries]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _progress_hook(
    progress: bool | Callable[[IngestReport], None], total_bytes: int
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance(n_bytes), close()) for a tqdm bar, a user callback, or nothing."""
    if callable(progress) or not progress:
        return (lambda _n: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="ingest", leave=True)
    return bar.update, bar.close


def _check_cleanup(cleanup: str | None) -> str:
    mode = "none" if cleanup is None else cleanup
    if mode not in CLEANUP_MODES:
        raise ConfigError(f"cleanup must be one of {CLEANUP_MODES} or None, got {cleanup!r}")
    return mode


def _in_scope(
    sid: str,
    scopes: Sequence[tuple[str, bool]],
    include: Sequence[str],
    exclude: Sequence[str],
) -> bool:
    """Whether this run covers ``sid``: under a folder given (and through its include/exclude
    globs, so ``--include '*.md' --cleanup full`` never deletes the other files), or a file."""
    for scope, is_prefix in scopes:
        if sid == scope:
            return True
        if is_prefix and (not scope or sid.startswith(scope + "/")):
            rel = sid[len(scope) + 1 :] if scope else sid
            return (not include or matches(rel, include)) and not matches(rel, exclude)
    return False


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: VectorStore,
    embedder: Any = None,
    *,
    tokenizer: Any = None,
    chunker: Callable[[str], Sequence[str]] | None = None,
    chunk_tokens: int = 512,
    overlap: int = 64,
    batch_size: int = 64,
    metadata: Mapping[str, Any] | None = None,
    skip_existing: bool = True,
    progress: bool | Callable[[IngestReport], None] = True,
    kernel_embedder: Any = None,
    source_id: str | None = None,
    cleanup: str | None = "incremental",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    dry_run: bool = False,
) -> IngestReport:
    """Read ``paths`` (files, folders), chunk by ``chunk_tokens`` of the LM tokenizer (default
    SmolLM2's), embed what is new and upsert; keep the collection in sync with the sources.

    ``source_id``: the id of a single file given, or the prefix of the ids found under a folder
    (default: the path relative to the folder given, the name for a file). ``cleanup``:
    ``"incremental"`` (default) replaces sources that changed; ``"full"`` also deletes the
    points of sources in scope (under the folders given, or the files named) that no longer
    exist; ``"none"``/None only adds. ``include``/``exclude``: globs on the relative path or
    the file name. ``dry_run``: count and list what would be added, changed and deleted,
    write nothing. ``skip_existing=False`` re-embeds and rewrites every chunk.

    The collection is created with the embedder's dimension if missing; one of another
    dimension raises :class:`DimensionMismatchError` before anything is written, and one
    written with the old id scheme raises :class:`LegacyIdsError` naming the migration.
    ``chunker`` (``text -> [piece, ...]``) replaces token windows with your own split.
    ``progress`` is a tqdm bar (True), silent (False) or a callback receiving the report after
    each batch. ``kernel_embedder`` also stores each chunk's SIFT kernel vector (a collection
    with a kernel needs one for every write; one without a kernel refuses it: ``ConfigError``).
    """
    started = time.perf_counter()
    mode = _check_cleanup(cleanup)
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
    check_window(chunk_tokens, overlap)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if source_id is not None and (not isinstance(source_id, str) or not source_id.strip("/")):
        raise InvalidInputError(f"source_id must be a non-empty str, got {source_id!r}")
    if embedder is None:
        from .embed import default_embedder

        embedder = default_embedder()
    spans = as_span_tokenizer(tokenizer) if chunker is None else None
    kd = None if kernel_embedder is None else int(kernel_embedder.dim)
    kid = None if kernel_embedder is None else kernel_id_of(kernel_embedder)
    report = IngestReport(cleanup=mode, dry_run=dry_run)
    if dry_run:
        if store.exists():  # checks dimension and kernel, creates nothing
            store.create(
                embedder.dim, distance="cosine", exist_ok=True, kernel_dim=kd, kernel_id=kid
            )
    else:  # an existing collection is checked before any write
        store.create(embedder.dim, distance="cosine", exist_ok=True, kernel_dim=kd, kernel_id=kid)
    state: dict[str, StoredSource] = {}
    if store.exists():
        state, legacy = scan(store)
        if legacy:
            raise legacy_error(store.collection, legacy)
    if not dry_run:
        store.index_payload(("source_id", "source_hash"))
        store.note_sources([os.path.realpath(p) for p in paths if os.path.exists(p)])
    skips = Skips()
    entries, scopes = walk(
        paths, skips, source_id=source_id, include=tuple(include), exclude=tuple(exclude)
    )
    report.skipped.extend(skips)
    advance, close = _progress_hook(progress, sum(_size(e.path) for e in entries))

    def on_batch() -> None:
        if callable(progress):
            report.seconds = time.perf_counter() - started
            progress(report)

    writer = Writer(
        store, embedder, report, batch_size,
        kernel_embedder=kernel_embedder, dry_run=dry_run, on_batch=on_batch,
    )  # fmt: skip
    settings = settings_key(
        chunking_key(chunker, tokenizer, chunk_tokens, overlap), dict(metadata or {})
    )
    base_meta = dict(metadata or {})
    seen: dict[str, str] = {}
    failed: set[str] = set()
    try:
        for entry in entries:
            sid, path = entry.source_id, entry.path
            if sid in seen:
                report.skipped.append((str(path), f"same source id {sid!r} as {seen[sid]}"))
                continue
            seen[sid] = str(path)
            try:
                data = read_bytes(path)
            except (ReadError, OSError) as exc:
                reason = str(exc) if isinstance(exc, NotRegular) else (
                    f"unreadable ({getattr(exc, 'strerror', None) or exc})"
                )  # fmt: skip
                report.skipped.append((str(path), reason))
                failed.add(sid)
                continue
            h = source_hash(data, settings)
            stored = state.get(sid)
            if stored is not None and skip_existing and stored.unchanged(h):
                report.files_read += 1
                report.sources_unchanged += 1
                report.chunks += stored.chunks
                report.skipped_existing += stored.chunks
                advance(len(data))
                continue
            sync_source(
                sid, path, data, h, stored, writer, report, mode, skip_existing,
                base_meta, chunker, spans, chunk_tokens, overlap,
            )  # fmt: skip
            advance(len(data))
        writer.flush()
        if mode == "full":
            vanished = [
                s
                for s in state
                if s not in seen and s not in failed and _in_scope(s, scopes, include, exclude)
            ]
            for s in sorted(vanished):
                writer.delete_after_write(list(state[s].ids))
                report.planned["deleted"].append(s)
            report.sources_deleted = len(vanished)
            writer.flush()
    finally:
        close()
    report.seconds = time.perf_counter() - started
    if callable(progress):
        progress(report)
    return report


def add_texts(
    store: VectorStore,
    embedder: Any,
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None = None,
    *,
    ids: Sequence[str] | None = None,
    batch_size: int = 64,
    kernel_embedder: Any = None,
) -> list[str]:
    """One point per text (no chunking); returns the point ids, in input order.

    ``ids``: a source id per text (any str). Adding a text under an id already stored replaces
    that id's text (new point first, then the old one deleted); the same text again is a no-op.
    Without ``ids`` a point's id derives from ``metadata["source"]`` (if any) and the content,
    so adding the same text again is a no-op and nothing is ever replaced.
    """
    if isinstance(texts, str):
        raise InvalidInputError("add_texts takes a list of texts, not one str")
    texts = list(texts)
    metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in texts]
    if len(metas) != len(texts):
        raise InvalidInputError(f"{len(metas)} metadatas for {len(texts)} texts")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidInputError("every text must be a non-empty str")
    if ids is not None:
        if isinstance(ids, str) or len(ids) != len(texts):
            raise InvalidInputError(f"ids must be a list of {len(texts)} str, got {ids!r}")
        if not all(isinstance(i, str) and i for i in ids) or len(set(ids)) != len(ids):
            raise InvalidInputError("ids must be distinct non-empty str")
    kd = None if kernel_embedder is None else int(kernel_embedder.dim)
    kid = None if kernel_embedder is None else kernel_id_of(kernel_embedder)
    store.create(embedder.dim, distance="cosine", exist_ok=True, kernel_dim=kd, kernel_id=kid)
    check_legacy(store)
    report = IngestReport()
    state: dict[str, StoredSource] = {}
    if ids is not None:
        store.index_payload(("source_id", "source_hash"))
        state, _ = scan(store, filter=Match("source_id", tuple(ids)))
    known: set[Any] = set()
    if ids is None:
        pids = list(
            dict.fromkeys(
                chunk_id(str(m.get("source", "")), 0, t) for t, m in zip(texts, metas, strict=True)
            )
        )
        for i in range(0, len(pids), 1000):
            known.update(p.id for p in store.retrieve(pids[i : i + 1000], with_vectors=False))
    writer = Writer(store, embedder, report, batch_size, kernel_embedder=kernel_embedder)
    out: list[str] = []
    for k, (text, meta) in enumerate(zip(texts, metas, strict=True)):
        if ids is None:
            source = str(meta.get("source", ""))
            pid = chunk_id(source, 0, text)
            h = source_hash(text.encode("utf-8"), b"text\x00")
            sync: dict[str, Any] = {"source_hash": h}
            stored: dict[Any, str] = {}
        else:
            source = ids[k]
            pid = chunk_id(source, 0, text)
            h = source_hash(text.encode("utf-8"), settings_key("text", meta))
            sync = {"source_id": source, "source_hash": h, "source_chunks": 1}
            stored = state[source].ids if source in state else {}
        out.append(pid)
        if pid in writer.pending:
            continue
        if ids is None:
            if pid in known:
                continue
        elif stored.get(pid) == h and len(stored) == 1:
            continue
        writer.add(pid, text, chunk_payload(meta, text, source, 0, sync), pid in stored)
        if ids is not None:
            writer.delete_after_write([i for i in stored if i != pid])
    writer.flush()
    return out
