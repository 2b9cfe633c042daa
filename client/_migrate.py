"""Re-keying a collection of the first id scheme in place (``qdrant-sift migrate-ids``).

The old scheme's chunks (``source`` an absolute path, no ``source_hash``) get their source id
relative to a root, the current id (:func:`~._sync.chunk_id`) and a ``source_hash`` that
matches nothing, keeping every vector. Apart from :mod:`._sync` (the current scheme's state,
scan and writer), which only detects and refuses such a collection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qdrant_sift.errors import IngestError

from ._sync import chunk_id, is_legacy, position
from .stores._base import VectorStore
from .stores._points import StoredPoint

__all__ = ["MIGRATED", "MigrateReport", "migrate_ids"]

#: ``source_hash`` of points re-keyed by :func:`migrate_ids`: never equal to a real hash, so the
#: next ingest rewrites their payloads (reusing their vectors).
MIGRATED = "migrated"

_JSONL_LINE = re.compile(r"^(.+\.jsonl):(\d+)$")


@dataclass
class MigrateReport:
    """What :func:`migrate_ids` did: points re-keyed, already current, and left outside."""

    migrated: int = 0
    current: int = 0
    outside: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = f"{self.migrated} points re-keyed, {self.current} already on the current scheme"
        if self.outside:
            line += f"; {len(self.outside)} sources outside every --root, left as they were"
        return line


def _relative(source: str, roots: Sequence[Path]) -> str | None:
    path = Path(source)
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return rel.as_posix() if str(rel) != "." else path.name
    return None


def migrate_ids(
    store: VectorStore,
    roots: Sequence[str | Path],
    *,
    batch_size: int = 256,
    dry_run: bool = False,
) -> MigrateReport:
    """Re-key a collection of the old id scheme in place, keeping every vector.

    Each old chunk (``source`` = absolute path) gets its source id relative to the root it lies
    under, the new id and a ``source_hash`` that matches nothing, so the next ingest rewrites
    the payloads and embeds only what really changed. New points are written before the old
    ones are deleted, batch by batch, so an interrupted migration is rerun safely. Sources
    outside every root refuse the whole migration (nothing is written); give more roots.
    """
    if not roots:
        raise IngestError("migrate-ids needs the folder(s) the collection was ingested from")
    if store.kernel_dim is not None:
        raise IngestError(
            f"collection {store.collection!r} holds kernel vectors, which migrate-ids cannot "
            "carry over; re-ingest it with --recreate"
        )
    resolved = [Path(r).expanduser().resolve() for r in roots]
    report = MigrateReport()
    outside: dict[str, None] = {}
    for p in store.scroll(batch_size=1000):
        if not is_legacy(p.payload):
            report.current += 1
        else:
            src = str(p.payload.get("source", ""))
            m = _JSONL_LINE.match(src)
            if _relative(m.group(1) if m else src, resolved) is None:
                outside.setdefault(src if not m else m.group(1), None)
    if outside:
        report.outside = list(outside)
        shown = ", ".join(report.outside[:5]) + (" …" if len(outside) > 5 else "")
        raise IngestError(
            f"{len(outside)} source(s) of {store.collection!r} lie outside every --root "
            f"({shown}); pass the folder(s) they were ingested from, or --recreate"
        )
    batch: list[StoredPoint] = []

    def flush() -> None:
        new_ids, payloads = [], []
        vecs: list[np.ndarray] = []
        for p in batch:
            src = str(p.payload.get("source", ""))
            m = _JSONL_LINE.match(src)
            sid = _relative(m.group(1) if m else src, resolved) or src
            index = int(p.payload.get("chunk_index", 0))
            text = str(p.payload["text"])
            pos = position(m.group(2) if m else None, index)
            payload = dict(p.payload)
            payload.update(
                source=f"{sid}:{m.group(2)}" if m else sid,
                source_id=sid,
                source_hash=MIGRATED,
                source_chunks=-1,
            )
            if p.vector is None:  # scroll() reads vectors unless told otherwise
                raise IngestError(f"point {p.id} came back without its vector; nothing migrated")
            new_ids.append(chunk_id(sid, pos, text))
            vecs.append(p.vector)
            payloads.append(payload)
        if not dry_run:
            store.upsert(new_ids, np.stack(vecs), payloads)
            store.delete([p.id for p in batch])
        report.migrated += len(batch)
        batch.clear()

    for p in list(_legacy_points(store)):
        batch.append(p)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return report


def _legacy_points(store: VectorStore) -> Iterator[StoredPoint]:
    for p in store.scroll(batch_size=1000, with_vectors=True):
        if is_legacy(p.payload):
            yield p
