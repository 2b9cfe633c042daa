"""Copy rows from a natural-space run into its deduplicated twin where nothing can differ.

The deduplicated data space of ``runs/confirm-dedup`` is ``runs/confirm-natural``'s data space
with the exact/whitespace duplicate chunks removed (same prompts, same order, ids renumbered).
For a prompt whose natural top K + tie margin by |cosine| holds no duplicated text, every removed
chunk lies outside that top set, so the deduplicated recall returns the same candidates in the same
order; selection and tuning are deterministic, so every row is identical (checked: ``bible/2``,
run in both folders, matches bit for bit in bits per byte, and its picks map one to one).
Such rows are copied with their picks renumbered and ``"reused_from"`` set; every other prompt must
be run. ``DEDUP/corpus.json`` comes from ``derive_corpus.py dedup``. Usage::

    python docs/eval/scripts/reuse_identical_recall.py docs/eval/runs/confirm-natural \
        docs/eval/runs/confirm-dedup            # --list: only print the prompts that must be run
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

from qdrant_sift.client.embed import default_embedder
from qdrant_sift.eval import TIE_MARGIN, Corpus, normalized_hash


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("natural", type=Path)
    ap.add_argument("dedup", type=Path)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--arms", default="nearest;sift:lam=0.1,kernel=model-mean", help="arms to copy")
    ap.add_argument("--list", action="store_true", help="print the prompts that must be run")
    args = ap.parse_args()

    natural = Corpus.load(args.natural / "corpus.json")
    dedup = Corpus.load(args.dedup / "corpus.json")
    if [p.text for p in natural.prompts] != [p.text for p in dedup.prompts]:
        sys.exit("the two corpora hold different prompts")
    counts = collections.Counter(normalized_hash(c.text) for c in natural.chunks)
    duplicated = np.array([counts[normalized_hash(c.text)] > 1 for c in natural.chunks])
    # natural id -> dedup id: the dedup space keeps the first copy of each text, in order
    by_text = {normalized_hash(c.text): c.id for c in dedup.chunks}
    remap = {c.id: by_text[normalized_hash(c.text)] for c in natural.chunks}

    rows = [json.loads(line) for line in (args.natural / "results.jsonl").open(encoding="utf-8")]
    wanted = list(dict.fromkeys(r["prompt_id"] for r in rows))
    prompts = {p.id: p for p in natural.prompts}
    vectors = np.load(args.natural / "embeddings.npy")
    query = np.asarray(default_embedder().embed_documents([prompts[i].text for i in wanted]))
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    scores = np.abs(query.astype(np.float32) @ vectors.T)
    identical = set()
    for j, pid in enumerate(wanted):
        # recall_candidates recalls K + TIE_MARGIN, then cuts
        top = np.argsort(-scores[j], kind="stable")[: args.k + TIE_MARGIN]
        if not duplicated[top].any():
            identical.add(pid)
    if args.list:
        print(",".join(p for p in wanted if p not in identical))
        return

    out = args.dedup / "results.jsonl"
    have = set()
    if out.exists():
        for line in out.open(encoding="utf-8"):
            r = json.loads(line)
            have.add((r["prompt_id"], r["arm"], r["n"]))
    arms = {"base", *args.arms.split(";")}
    added = 0
    with out.open("a", encoding="utf-8") as fh:
        for r in rows:
            key = (r["prompt_id"], r["arm"], r["n"])
            if r["prompt_id"] not in identical or r["arm"] not in arms or key in have:
                continue
            r = dict(r, picks=[remap[i] for i in r["picks"]], reused_from=str(args.natural.name))
            fh.write(json.dumps(r) + "\n")
            added += 1
    print(f"{len(identical)} of {len(wanted)} prompts have identical recall; {added} rows copied")


if __name__ == "__main__":
    main()
