"""Ingest files into a vector store: read, chunk by LM tokens, embed in batches, upsert.

Ids are UUIDv5 of (source, chunk index, content hash), so re-running is idempotent and an
interrupted run (Ctrl-C, kill -9) resumes: chunks already stored are found by id and neither
re-embedded nor duplicated. Bad files are skipped and reported, never fatal to the rest.

A ``kernel_embedder`` (e.g. ``ModelEmbedder``, the language model's own hidden states) also
embeds every chunk into SIFT's kernel, stored as a second named vector beside the recall one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import DimensionMismatchError, InvalidInputError

from .chunking import as_span_tokenizer, check_window, chunk_text
from .stores._base import VectorStore

__all__ = [
    "SUPPORTED_SUFFIXES",
    "IngestReport",
    "add_texts",
    "chunk_id",
    "ingest",
    "iter_files",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".rst", ".py", ".jsonl")
#: Namespace of every chunk id; changing it would orphan every stored collection.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/qdrant-sift/chunk")
_RESERVED = ("text", "source", "chunk_index")


def chunk_id(source: str, chunk_index: int, text: str) -> str:
    """Deterministic point id: same source, position and content → same id."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, f"{source}\x00{chunk_index}\x00{digest}"))


@dataclass
class IngestReport:
    """What one ingest run did; ``skipped`` lists (path, reason) of files/records left out."""

    files_read: int = 0
    records_read: int = 0
    chunks: int = 0
    upserted: int = 0
    skipped_existing: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        lines = [
            f"{self.files_read} files ({self.records_read} records) → {self.chunks} chunks: "
            f"{self.upserted} upserted, {self.skipped_existing} already stored, "
            f"{len(self.skipped)} skipped, {self.seconds:.1f} s"
        ]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  … and {len(self.skipped) - 20} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Doc:
    source: str
    text: str
    metadata: dict[str, Any]


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, without opening it; None for a regular file.

    ``stat`` first, never ``open``: opening a FIFO blocks until a writer appears.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symlink (to {target})"
        return "not found" if exc.errno == errno.ENOENT else f"unreadable ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')})"


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _add_file(f: Path, seen: dict[Path, None], report: IngestReport) -> None:
    problem = _entry_problem(f)
    if problem is None and f.is_dir():
        problem = "symlink to a folder (not followed)"
    if problem is not None:
        report.skipped.append((str(f), problem))
    elif f.suffix.lower() not in SUPPORTED_SUFFIXES:
        report.skipped.append((str(f), f"unsupported type {f.suffix or '(none)'}"))
    else:
        seen.setdefault(Path(os.path.realpath(f)), None)


def iter_files(paths: Iterable[str | os.PathLike[str]], report: IngestReport) -> list[Path]:
    """Supported regular files under ``paths`` (folders recursively, hidden entries and
    symlinked folders skipped), deduplicated by their resolved path.

    Everything else is reported in ``report.skipped`` under its own path, never fatal:
    FIFOs, sockets and devices, symlink loops, dangling links, unreadable files and folders.
    """
    seen: dict[Path, None] = {}

    def on_walk_error(exc: OSError) -> None:
        report.skipped.append((str(exc.filename), f"unreadable folder ({exc.strerror or exc})"))

    for raw in paths:
        path = Path(raw).expanduser()
        problem = _entry_problem(path)
        if problem is not None:
            report.skipped.append((str(path), problem))
        elif path.is_dir():
            for root, dirs, files in os.walk(path, onerror=on_walk_error):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                for d in [d for d in dirs if (Path(root) / d).is_symlink()]:
                    report.skipped.append(
                        (str(Path(root) / d), "symlink to a folder (not followed)")
                    )
                for name in sorted(files):
                    if not name.startswith("."):
                        _add_file(Path(root) / name, seen, report)
        else:
            _add_file(path, seen, report)
    return list(seen)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; :class:`_NotRegular` when it is not (any longer) a regular file.

    Opened non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO swapped in
    after :func:`iter_files` looked cannot make ingest hang.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(_KINDS.get(stat.S_IFMT(st.st_mode), "special file"))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


class _NotRegular(Exception):
    pass


def _read_docs(path: Path, report: IngestReport) -> Iterator[_Doc]:
    try:
        data = _read_bytes(path)
        if b"\x00" in data:
            report.skipped.append((str(path), "binary (contains NUL bytes)"))
            return
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.skipped.append((str(path), f"not UTF-8 ({exc.reason} at byte {exc.start})"))
        return
    except _NotRegular as exc:
        report.skipped.append((str(path), f"not a regular file ({exc})"))
        return
    except OSError as exc:
        report.skipped.append((str(path), f"unreadable ({exc.strerror or exc})"))
        return
    report.files_read += 1
    if path.suffix.lower() != ".jsonl":
        report.records_read += 1
        yield _Doc(str(path), text, {})
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report.skipped.append((where, f"invalid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            report.skipped.append((where, "no string field 'text'"))
            continue
        report.records_read += 1
        meta = {k: v for k, v in record.items() if k != "text"}
        yield _Doc(where, record["text"], meta)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _payload(meta: Mapping[str, Any], text: str, source: str, index: int) -> dict[str, Any]:
    payload = {k: v for k, v in meta.items() if k not in _RESERVED}
    payload.update(text=text, source=source, chunk_index=index)
    return payload


class _Writer:
    """Batches (id, text, payload), skips ids already stored, embeds the rest, upserts."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Any,
        report: IngestReport,
        batch_size: int,
        skip_existing: bool,
        kernel_embedder: Any = None,
    ) -> None:
        self.store, self.embedder, self.report = store, embedder, report
        self.kernel_embedder = kernel_embedder
        self.batch_size, self.skip_existing = batch_size, skip_existing
        self.pending: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(self, pid: str, text: str, payload: dict[str, Any]) -> None:
        if pid in self.pending:
            self.report.skipped_existing += 1
            return
        self.pending[pid] = (text, payload)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        ids = list(self.pending)
        if self.skip_existing:
            stored = {p.id for p in self.store.retrieve(ids, with_vectors=False)}
            self.report.skipped_existing += len(stored)
            ids = [i for i in ids if i not in stored]
        if ids:
            texts = [self.pending[i][0] for i in ids]
            vectors = _embed(self.embedder, texts, "embedder")
            kernels = None
            if self.kernel_embedder is not None:
                kernels = _embed(self.kernel_embedder, texts, "kernel embedder")
            self.store.upsert(
                ids, vectors, [self.pending[i][1] for i in ids], kernel_vectors=kernels
            )
            self.report.upserted += len(ids)
        self.pending.clear()


def _embed(embedder: Any, texts: list[str], what: str) -> np.ndarray:
    vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise DimensionMismatchError(
            f"{what} returned shape {vectors.shape} for {len(texts)} texts"
        )
    return vectors


def _kernel_dim(kernel_embedder: Any) -> int | None:
    return None if kernel_embedder is None else int(kernel_embedder.dim)


def _progress_hook(
    progress: bool | Callable[[IngestReport], None], total_bytes: int
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance(n_bytes), close()) for a tqdm bar, a user callback, or nothing."""
    if callable(progress):
        return (lambda _n: None), (lambda: None)
    if not progress:
        return (lambda _n: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="ingest", leave=True)
    return bar.update, bar.close


def _split(
    text: str,
    chunker: Callable[[str], Sequence[str]] | None,
    spans: Any,
    chunk_tokens: int,
    overlap: int,
) -> list[str]:
    if chunker is None:
        return [c.text for c in chunk_text(text, spans, chunk_tokens, overlap)]
    pieces = list(chunker(text))
    if not all(isinstance(p, str) for p in pieces):
        raise InvalidInputError("chunker must return a list of str")
    return [p for p in pieces if p.strip()]


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
) -> IngestReport:
    """Read ``paths`` (.txt .md .rst .py files, .jsonl with a ``text`` field, folders),
    chunk by ``chunk_tokens`` of the LM tokenizer (default SmolLM2's), embed and upsert.

    The collection is created with the embedder's dimension if missing; one of another
    dimension raises :class:`DimensionMismatchError` before anything is written. ``chunker``
    (``text -> [piece, ...]``) replaces token windows with your own split. ``progress``
    is a tqdm bar (True), silent (False) or a callback receiving the report after each batch.
    ``kernel_embedder`` also stores each chunk's SIFT kernel vector (a collection with a
    kernel needs one for every write; one without a kernel refuses it: ``ConfigError``).
    """
    started = time.perf_counter()
    if batch_size <= 0:
        raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
    check_window(chunk_tokens, overlap)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if embedder is None:
        from .embed import default_embedder

        embedder = default_embedder()
    spans = as_span_tokenizer(tokenizer) if chunker is None else None
    kd = _kernel_dim(kernel_embedder)  # an existing collection is checked before any write
    store.create(embedder.dim, distance="cosine", exist_ok=True, kernel_dim=kd)
    report = IngestReport()
    files = iter_files(paths, report)
    total = sum(_size(f) for f in files)
    advance, close = _progress_hook(progress, total)
    writer = _Writer(store, embedder, report, batch_size, skip_existing, kernel_embedder)
    base_meta = dict(metadata or {})
    try:
        for path in files:
            for doc in _read_docs(path, report):
                meta = {**base_meta, **doc.metadata}
                for index, text in enumerate(
                    _split(doc.text, chunker, spans, chunk_tokens, overlap)
                ):
                    report.chunks += 1
                    pid = chunk_id(doc.source, index, text)
                    before = report.upserted + report.skipped_existing
                    writer.add(pid, text, _payload(meta, text, doc.source, index))
                    if callable(progress) and report.upserted + report.skipped_existing != before:
                        report.seconds = time.perf_counter() - started
                        progress(report)
            advance(_size(path))
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
    batch_size: int = 64,
    kernel_embedder: Any = None,
) -> list[str]:
    """One point per text (no chunking); returns its deterministic id, in input order.

    The id derives from ``metadata["source"]`` (if any) and the content, so adding the same
    text again is a no-op.
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
    kd = _kernel_dim(kernel_embedder)  # an existing collection is checked before any write
    store.create(embedder.dim, distance="cosine", exist_ok=True, kernel_dim=kd)
    report = IngestReport()
    writer = _Writer(store, embedder, report, batch_size, True, kernel_embedder)
    ids: list[str] = []
    for text, meta in zip(texts, metas, strict=True):
        source = str(meta.get("source", ""))
        pid = chunk_id(source, 0, text)
        ids.append(pid)
        writer.add(pid, text, _payload(meta, text, source, 0))
    writer.flush()
    return ids
