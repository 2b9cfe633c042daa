"""Ingestion kept in sync: re-ingesting an unchanged ~10 MB corpus against its first ingest.

The baseline is the first ingest of the same corpus into the same kind of store, in the same run
(re-running the first ingest from scratch, ``--recreate``, is what a user without source
tracking would do). The embedder is a fast hashing function, so the first ingest is mostly
chunking and writing and the ratio is a conservative bound: with MiniLM the first ingest costs
far more (about 0.1 s per chunk on one core) while an unchanged re-ingest embeds nothing.

    python bench/bench_ingest.py [--mb 10] [--stores edge,local]

Rows: first ingest; unchanged re-ingest (target ≤ 5 % of the first, nothing embedded); one line
inserted in the middle of the largest file; the whole corpus moved to another folder
(``cleanup="full"``: zero writes expected).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sysconfig
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from qdrant_sift.client.embed import FunctionEmbedder
from qdrant_sift.client.ingest import ingest
from qdrant_sift.client.stores import EdgeStore, QdrantStore

DIM = 384


def _embed(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), DIM), np.float32)
    for row, text in enumerate(texts):
        for word in text.split():
            h = zlib.crc32(word.encode())
            out[row, h % DIM] += 1.0 if h & 1 else -1.0
    out[:, 0] += 1e-3  # no zero rows in a cosine collection
    return out


def _corpus(folder: Path, mb: float) -> tuple[int, int]:
    std = Path(sysconfig.get_paths()["stdlib"])
    total = files = 0
    for f in sorted(std.rglob("*.py")):
        if "test" in f.parts or "site-packages" in f.parts or "__pycache__" in f.parts:
            continue
        dest = folder / f.relative_to(std)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
        total += f.stat().st_size
        files += 1
        if total >= mb * 1e6:
            break
    return total, files


def _store(kind: str, path: Path) -> object:
    return EdgeStore(path, "bench") if kind == "edge" else QdrantStore("bench", path=str(path))


def run(kind: str, root: Path, work: Path) -> list[tuple[str, float, str]]:
    emb = FunctionEmbedder(_embed, DIM, normalize=True)
    kw = {"chunk_tokens": 512, "overlap": 64, "batch_size": 64, "progress": False}
    rows = []
    with _store(kind, work / f"{kind}-store") as store:  # type: ignore[attr-defined]
        t = time.perf_counter()
        first = ingest(root, store, emb, **kw)
        t_first = time.perf_counter() - t
        rows.append(("first ingest", t_first, f"{first.chunks} chunks embedded and written"))
        t = time.perf_counter()
        again = ingest(root, store, emb, **kw)
        dt = time.perf_counter() - t
        rows.append(
            (
                "re-ingest, unchanged",
                dt,
                f"{again.embedded} embedded, "
                f"{again.upserted} written; {dt / t_first:.1%} of first (target ≤ 5 %)",
            )
        )
        big = max(root.rglob("*.py"), key=lambda p: p.stat().st_size)
        original = big.read_text()
        lines = original.splitlines(keepends=True)
        mid = len(lines) // 2
        big.write_text("".join([*lines[:mid], "# one edited line\n", *lines[mid:]]))
        try:
            t = time.perf_counter()
            edit = ingest(root, store, emb, **kw)
            dt = time.perf_counter() - t
            rows.append(
                (
                    f"one line inserted in {big.name}",
                    dt,
                    f"{edit.embedded} embedded, {edit.chunks_deleted} deleted",
                )
            )
        finally:
            big.write_text(original)
        ingest(root, store, emb, **kw)  # back in sync
        moved = work / "moved"
        shutil.copytree(root, moved)
        t = time.perf_counter()
        mv = ingest(moved, store, emb, cleanup="full", **kw)
        dt = time.perf_counter() - t
        rows.append(
            (
                "corpus moved to another folder",
                dt,
                f"{mv.upserted + mv.chunks_deleted} writes, {mv.embedded} embedded",
            )
        )
        shutil.rmtree(moved)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="corpus size (default 10 MB)")
    parser.add_argument("--stores", default="edge,local", help="edge and/or local (qdrant-client)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        size, files = _corpus(work / "corpus", args.mb)
        load = os.getloadavg()
        print(
            f"corpus: {size / 1e6:.1f} MB of stdlib Python in {files} files; "
            f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {os.cpu_count()} cores"
        )
        for kind in args.stores.split(","):
            print(f"\n| {kind} | seconds | ratio to first | what happened |")
            print("|---|---:|---:|---|")
            rows = run(kind, work / "corpus", work)
            first = rows[0][1]
            for name, seconds, what in rows:
                print(f"| {name} | {seconds:.2f} | {seconds / first:.3f} | {what} |")


if __name__ == "__main__":
    main()
