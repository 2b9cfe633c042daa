"""One source's chunks: how :func:`~qdrant_sift.client.ingest.ingest` splits a new or changed
source (token windows or a custom chunker), the key that records that split in the source's
hash, each chunk's payload, and the write of the source with the deletion of its stale chunks.

Apart from :mod:`.ingest` (the walk over the sources, ``add_texts``) to keep that module a
readable size; ``add_texts`` builds its payloads with :func:`chunk_payload` too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_sift.errors import InvalidInputError

from ._sources import ReadError, Skips, heading_marks, heading_path, read_source
from ._sync import SYNC_FIELDS, IngestReport, StoredSource, Writer, chunk_id, position
from .chunking import chunk_text

__all__ = ["RESERVED", "chunk_payload", "chunking_key", "split_text", "sync_source"]

#: Payload keys ingest owns; a JSONL record or ``metadata`` cannot override them.
RESERVED = ("text", "source", "chunk_index", "reader", "headings", *SYNC_FIELDS)


def split_text(
    text: str,
    chunker: Callable[[str], Sequence[str]] | None,
    spans: Any,
    chunk_tokens: int,
    overlap: int,
) -> list[tuple[str, int]]:
    """(chunk, its offset in ``text``) pairs; a custom chunker's pieces are found in order."""
    if chunker is None:
        return [(c.text, c.start) for c in chunk_text(text, spans, chunk_tokens, overlap)]
    pieces = list(chunker(text))
    if not all(isinstance(p, str) for p in pieces):
        raise InvalidInputError("chunker must return a list of str")
    out: list[tuple[str, int]] = []
    cursor = 0
    for p in pieces:
        if p.strip():
            at = text.find(p, cursor)
            out.append((p, max(at, 0)))
            cursor = at if at >= 0 else cursor
    return out


def chunking_key(
    chunker: Callable[[str], Sequence[str]] | None, tokenizer: Any, chunk_tokens: int, overlap: int
) -> str:
    if chunker is not None:
        name = getattr(chunker, "__qualname__", type(chunker).__qualname__)
        code = getattr(chunker, "__code__", None)  # two lambdas differ by their code
        body = (
            hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:12]
            if code
            else ""
        )
        return f"chunker:{getattr(chunker, '__module__', '')}.{name}:{body}"
    if tokenizer is None or isinstance(tokenizer, str):
        tok = tokenizer or "default"
    else:
        tok = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__qualname__)
    return f"tokens:{tok}:{chunk_tokens}:{overlap}"


def chunk_payload(
    meta: Mapping[str, Any], text: str, source: str, index: int, sync: dict[str, Any]
) -> dict[str, Any]:
    payload = {k: v for k, v in meta.items() if k not in RESERVED}
    payload.update(text=text, source=source, chunk_index=index, **sync)
    return payload


def sync_source(
    sid: str,
    path: Path,
    data: bytes,
    h: str,
    stored: StoredSource | None,
    writer: Writer,
    report: IngestReport,
    mode: str,
    skip_existing: bool,
    base_meta: dict[str, Any],
    chunker: Callable[[str], Sequence[str]] | None,
    spans: Any,
    chunk_tokens: int,
    overlap: int,
) -> None:
    """Write one new or changed source, then queue the deletion of what it no longer has."""
    skips = Skips()
    try:
        reader, docs = read_source(path, data, skips)
    except ReadError as exc:
        report.skipped.append((str(path), str(exc)))
        report.skipped.extend(skips)
        return
    report.skipped.extend(skips)
    report.files_read += 1
    report.records_read += len(docs)
    pieces: list[tuple[str, str, str, int, dict[str, Any], dict[str, Any]]] = []
    for doc in docs:
        meta = {**base_meta, **doc.metadata}
        source = f"{sid}:{doc.part}" if reader == "jsonl" else sid
        marks = heading_marks(doc.text) if reader in ("markdown", "html") else []
        for index, (text, at) in enumerate(
            split_text(doc.text, chunker, spans, chunk_tokens, overlap)
        ):
            headings = heading_path(marks, at) if marks else []
            extra = {"headings": headings} if headings else {}
            pieces.append((text, source, position(doc.part, index), index, meta, extra))
    sync = {"reader": reader, "source_id": sid, "source_hash": h, "source_chunks": len(pieces)}
    have = stored.ids if stored is not None else {}
    new_ids: set[str] = set()
    for text, source, pos, index, meta, extra in pieces:
        pid = chunk_id(sid, pos, text)
        new_ids.add(pid)
        report.chunks += 1
        if skip_existing and have.get(pid) == h:
            report.skipped_existing += 1
            continue
        payload = chunk_payload(meta, text, source, index, {**sync, **extra})
        writer.add(pid, text, payload, pid in have)
    if (stored is None or not stored.ids) and not pieces:
        report.sources_unchanged += 1  # empty, as before: nothing to store
    elif stored is None or not stored.ids:
        report.sources_added += 1
        report.planned["added"].append(sid)
    else:
        report.sources_changed += 1
        report.planned["changed"].append(sid)
        if mode != "none":
            writer.delete_after_write([i for i in stored.ids if i not in new_ids])
