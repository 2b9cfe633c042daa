"""What the RAG adapters cost on top of the stack's own nearest-neighbour retrieval.

One seeded clustered collection (default 20k × 384, cosine) written by langchain-qdrant's
``QdrantVectorStore`` into qdrant-client local mode; the query embedding is precomputed (a fixed
``Embeddings``), so embedding time is excluded everywhere. Rows, median of ``--reps`` calls:

  * baseline — ``similarity_search_by_vector(q, k=N)``, LangChain's own NN retrieval;
  * ``max_marginal_relevance_search_by_vector`` (fetch_k=K) — LangChain's diversity option;
  * ``SiftRetriever`` (fetch_k=K, k=N) — recall with vectors in both directions + SIFT;
  * ``ContextualCompressionRetriever`` + ``SiftCompressor`` (base k=K) — vectors fetched by id;
  * ``rerank()`` on K precomputed vectors vs the bare ``select`` it wraps (adapter overhead).

Run: ``.venv/bin/python bench/bench_rag.py`` (``--n 5000`` for a quick look). Rows are timed
round-robin, so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

K, N = 200, 50


def clustered(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, d)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    q = centres[rng.integers(0, 64, 16)] + 0.8 * rng.standard_normal((16, d)).astype(np.float32)
    return x, q


def interleaved_ms(rows: list[tuple[str, Callable[[int], Any]]], reps: int) -> list[float]:
    """Median ms per row, timing the rows round-robin so load drift on a shared machine hits
    every row alike."""
    for _, fn in rows:
        fn(0)  # warm-up (first torch call, caches)
    times: list[list[float]] = [[] for _ in rows]
    for i in range(reps):
        for slot, (_, fn) in enumerate(rows):
            started = time.perf_counter()
            fn(i)
            times[slot].append((time.perf_counter() - started) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import torch
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient, models

    from qdrant_sift.client import rerank
    from qdrant_sift.client.langchain import SiftCompressor, SiftRetriever
    from qdrant_sift.reranker import select

    torch.set_num_threads(2)
    x, queries = clustered(args.n, args.dim, seed=0)
    texts = [f"chunk {i}" for i in range(args.n)]
    current = {"q": queries[0]}

    class Fixed(Embeddings):
        """Returns the current benchmark query (documents are written with their vectors;
        langchain-qdrant embeds one dummy text to check the dimension)."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [current["q"].tolist() for _ in texts]

        def embed_query(self, text: str) -> list[float]:
            return current["q"].tolist()

    client = QdrantClient(location=":memory:")
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=args.dim, distance=models.Distance.COSINE)
    )
    started = time.perf_counter()
    for lo in range(0, args.n, 2000):
        client.upsert(
            "bench",
            models.Batch(
                ids=list(range(lo, min(lo + 2000, args.n))),
                vectors=x[lo : lo + 2000].tolist(),
                payloads=[{"page_content": t, "metadata": {}} for t in texts[lo : lo + 2000]],
            ),
        )
    print(f"wrote {args.n} × {args.dim} in {time.perf_counter() - started:.1f} s (local mode)")
    store = QdrantVectorStore(client=client, collection_name="bench", embedding=Fixed())

    def q_of(i: int) -> np.ndarray:
        current["q"] = queries[i % len(queries)]
        return current["q"]

    sift = SiftRetriever.from_vector_store(store, k=N, fetch_k=K)
    compress = ContextualCompressionRetriever(
        base_compressor=SiftCompressor.from_vector_store(store, k=N),
        base_retriever=store.as_retriever(search_kwargs={"k": K}),
    )
    cand = x[:K] / np.linalg.norm(x[:K], axis=1, keepdims=True)

    def nearest(i: int) -> Any:
        return store.similarity_search_by_vector(q_of(i).tolist(), k=N)

    def mmr(i: int) -> Any:
        return store.max_marginal_relevance_search_by_vector(q_of(i).tolist(), k=N, fetch_k=K)

    from qdrant_sift.client.stores import QdrantStore

    recall_store = QdrantStore("bench", client=client)

    rows = [
        ("NN: similarity_search_by_vector(k=N)", nearest),
        (
            "  similarity_search_by_vector(k=K)",
            lambda i: store.similarity_search_by_vector(q_of(i).tolist(), k=K),
        ),
        (
            "  QdrantStore.recall(K, vectors, both directions)",
            lambda i: recall_store.recall(q_of(i), K),
        ),
        ("LangChain MMR by vector (fetch_k=K)", mmr),
        ("SiftRetriever (fetch_k=K, both directions)", lambda i: (q_of(i), sift.invoke("q"))),
        ("ContextualCompression + SiftCompressor", lambda i: (q_of(i), compress.invoke("q"))),
    ]
    results = list(zip([name for name, _ in rows], interleaved_ms(rows, args.reps), strict=True))
    base = results[0][1]
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nK={K}, N={N}, {args.n} points, median of {args.reps}, 2 torch threads, "
          f"load average {load} on {os.cpu_count()} CPUs (not a result when loaded)\n")  # fmt: skip
    print("| path | ms | × NN |\n|---|---:|---:|")
    for name, ms in results:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")

    raw, facade = interleaved_ms(
        [
            ("select", lambda i: select(q_of(i), cand, N, unique=True)),
            (
                "rerank",
                lambda i: rerank(
                    None, texts[:K], N, query_embedding=q_of(i), document_embeddings=cand
                ),
            ),
        ],
        args.reps * 4,
    )
    print("\n| selection on K precomputed vectors | ms | × select |\n|---|---:|---:|")
    print(f"| qdrant_sift.reranker.select | {raw:.2f} | 1.00 |")
    print(f"| rerank() facade | {facade:.2f} | {facade / raw:.2f} |")


if __name__ == "__main__":
    main()
