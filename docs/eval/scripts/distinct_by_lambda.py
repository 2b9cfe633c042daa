"""Distinct picks among SIFT's first N, by λ and kernel, on a finished evaluation folder.

Selection only (no tuning, no model load): the folder's Edge store gives each prompt's K
candidates, its ``kernel-model-mean.f32`` cache their model-kernel vectors. Used to see how λ sets
SIFT's repeat rate in each kernel (docs/eval/README.md, "The model kernel at N = 50")::

    python docs/eval/scripts/distinct_by_lambda.py docs/eval/runs/sweep --split dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from qdrant_sift.client.embed import default_embedder
from qdrant_sift.eval import (
    Corpus,
    KernelCache,
    corpus_store,
    embed_corpus,
    recall_candidates,
    split_prompts,
)
from qdrant_sift.reranker import LocalReranker


class _CachedOnly:
    """The run's kernel cache must already hold every vector (this script loads no model)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        raise SystemExit(f"{len(texts)} kernel vectors are not in the run's cache")


def _cached_dim(path: Path) -> int:
    """The kernel's dimension as the run's cache stores it: its float32 rows over its keys (the
    model's hidden size, which :class:`KernelCache` takes from the embedder that wrote them)."""
    keys_path = path.with_suffix(".keys")
    if not path.exists() or not keys_path.exists():
        raise SystemExit(f"{path} (and its .keys) not found: the run cached no model kernel")
    keys = len(keys_path.read_text(encoding="utf-8").split())
    floats = path.stat().st_size // np.dtype(np.float32).itemsize
    if keys == 0 or floats % keys:
        raise SystemExit(f"{path} holds {floats} floats for {keys} keys: not whole rows")
    return floats // keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--split", default="dev")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("-k", type=int, default=200)
    ap.add_argument("--lams", default="0.01,0.03,0.1,0.3,1,3")
    args = ap.parse_args()
    lams = [float(x) for x in args.lams.split(",")]
    corpus = Corpus.load(args.folder / "corpus.json")
    embedder = default_embedder()  # what the run's "minilm" recall embedder is
    vectors = embed_corpus(corpus, embedder, args.folder / "embeddings.npy")
    store = corpus_store(corpus, vectors, args.folder / "store")
    cache_path = args.folder / "kernel-model-mean.f32"
    cache = KernelCache(_CachedOnly(_cached_dim(cache_path)), cache_path)
    reranker = LocalReranker()
    counts: dict[tuple[str, float], list[int]] = {}
    try:
        for prompt in split_prompts(corpus.prompts, args.split):
            q = np.asarray(embedder.embed_query(prompt.text), np.float32)
            cands = recall_candidates(store, q, args.k, both_directions=True)
            kv = cache.vectors([p["text"] for p in cands.payloads])
            kq = cache.vectors([prompt.text])[0]
            for lam in lams:
                for name, (query, rows) in {
                    "model": (kq, kv),
                    "minilm": (q, cands.vectors),
                }.items():
                    picks = reranker.select(query, rows, args.n, lam=lam).indices
                    counts.setdefault((name, lam), []).append(len(set(picks)))
    finally:
        store.close()
    print(f"| λ | {' | '.join(f'{lam:g}' for lam in lams)} |")
    print(f"|---|{'---|' * len(lams)}")
    for name in ("model", "minilm"):
        cells = " | ".join(f"{np.mean(counts[(name, lam)]):.1f}" for lam in lams)
        print(f"| {name} kernel | {cells} |")


if __name__ == "__main__":
    main()
