"""Derive a run folder's corpus from another run's, so that both hold out exactly the same prompts.

Rebuilding a corpus from the machine's files would hold out other documents once the installed
packages change; the derived data spaces below differ from their source in one controlled way.

    cd docs/eval/runs
    python ../scripts/derive_corpus.py dedup confirm-natural confirm-dedup
    python ../scripts/derive_corpus.py redundancy sweep redundancy-r3 --copies 3

- ``dedup``: the source's data space without exact/whitespace-normalised duplicate chunks (the
  first copy kept, ids renumbered in order): ``runs/confirm-dedup``.
- ``redundancy``: the source's data space plus ``--copies`` extra copies of every chunk (exact,
  re-wrapped, edited; :func:`qdrant_sift.eval.inject_redundancy`): ``runs/redundancy-r1``, ``-r3``.

Then ``qdrant-sift eval --out <folder> ...`` resumes from the derived ``corpus.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any

from qdrant_sift.eval import Corpus, inject_redundancy, normalized_hash


def derive_dedup(source: Path, out: Path) -> None:
    data = json.loads((source / "corpus.json").read_text(encoding="utf-8"))
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    dropped = collections.Counter[str]()
    for chunk in data["chunks"]:
        h = normalized_hash(chunk["text"])
        if h in seen:
            dropped[chunk["domain"]] += 1
            continue
        seen.add(h)
        kept.append(dict(chunk, id=len(kept)))
    stats = dict(data["stats"], deduplicated=True, duplicate_chunks=sum(dropped.values()))
    stats["data_chunks_per_domain"] = {
        d: n - dropped[d] for d, n in data["stats"]["data_chunks_per_domain"].items()
    }
    stats["derived_from"] = (
        f"{source.name}/corpus.json: same prompts; data chunks with an exact or "
        "whitespace-normalised duplicate earlier in the data space removed"
    )
    out.mkdir(parents=True, exist_ok=True)
    payload = {"chunks": kept, "prompts": data["prompts"], "stats": stats}
    (out / "corpus.json").write_text(json.dumps(payload), encoding="utf-8")
    print(f"wrote {out / 'corpus.json'}: {len(kept)} chunks, {dict(dropped)} removed")


def derive_redundancy(source: Path, out: Path, copies: int, seed: int = 0) -> None:
    corpus = inject_redundancy(Corpus.load(source / "corpus.json"), copies, seed=seed)
    corpus.stats["derived_from"] = (
        f"{source.name}/corpus.json with {copies} injected copies of every data chunk"
    )
    out.mkdir(parents=True, exist_ok=True)
    corpus.save(out / "corpus.json")
    print(f"wrote {out / 'corpus.json'}: {len(corpus.chunks)} chunks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("dedup", "redundancy"))
    ap.add_argument("source", type=Path, help="run folder holding the source corpus.json")
    ap.add_argument("out", type=Path, help="run folder to write corpus.json into")
    ap.add_argument("--copies", type=int, default=1)
    args = ap.parse_args()
    if (args.out / "corpus.json").exists():
        raise SystemExit(f"{args.out / 'corpus.json'} exists; remove it first")
    if args.kind == "dedup":
        derive_dedup(args.source, args.out)
    else:
        derive_redundancy(args.source, args.out, args.copies)


if __name__ == "__main__":
    main()
