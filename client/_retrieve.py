"""Recall and select, the pipeline behind ``SiftClient.search`` and ``adapt_and_generate``:
embed the prompt, recall K candidates, select N in SIFT's kernel and read the picks' payloads.

A function of the client rather than a method, so :mod:`._client` stays the client's parts and
calls. It reads the parts through the client's public lazy properties, so each part is built
when a stage first needs it, as before.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from qdrant_sift.client._args import check_retrieval
from qdrant_sift.client._types import Document, ProgressCallback, ProgressEvent, StageTimings
from qdrant_sift.errors import CollectionNotFoundError, EmptyCollectionError
from qdrant_sift.options import SelectOptions

if TYPE_CHECKING:
    from qdrant_sift.client._client import SiftClient

__all__ = ["retrieve"]


def retrieve(
    client: SiftClient,
    prompt: str,
    n: int,
    k: int,
    opts: SelectOptions,
    *,
    kernel: Any,
    filter: Any,
    progress: ProgressCallback | None,
) -> tuple[list[Document], Any, StageTimings]:
    """Embed ``prompt``, recall ``k`` candidates from ``client.store``, select ``n`` with
    ``client.reranker`` in ``kernel`` (the client's :class:`SelectionKernel`, None: recall's
    vectors) and read the picks' payloads: the documents, the selection and the stage timings."""
    both_directions = opts.both_directions
    check_retrieval(
        prompt=prompt, n=n, k=k, both_directions=both_directions, filter=None, filter_check=None
    )

    def notify(stage: str) -> None:
        if progress is not None:
            progress(ProgressEvent(stage, 0, 1))

    notify("embed")
    started = time.perf_counter()
    query = np.asarray(client.embedder.embed_query(prompt), dtype=np.float32)
    embed_s = time.perf_counter() - started

    notify("recall")
    started = time.perf_counter()
    try:
        stored = kernel is not None and kernel.stored(client.store)
        # payloads (texts) of all K only when the kernel is computed from them; otherwise
        # only the picks' are read, after the selection: N payloads instead of K (with tiny
        # payloads bench_store measured no net gain on Edge; chunk texts are not tiny)
        texts_needed = kernel is not None and not stored
        candidates = client.store.recall(
            query, k, both_directions=both_directions, filter=filter, with_kernel=stored,
            with_payload=texts_needed,
        )  # fmt: skip
    except CollectionNotFoundError as exc:
        raise EmptyCollectionError(
            f"collection {client.collection!r} does not exist yet: add texts first "
            "(SiftClient.add_texts or `qdrant-sift ingest PATH --collection "
            f"{client.collection}`)"
        ) from exc
    recall_s = time.perf_counter() - started
    if len(candidates) == 0:
        raise EmptyCollectionError(
            f"nothing to recall from collection {client.collection!r}"
            + (" with this filter" if filter is not None else "")
            + ": add texts first (SiftClient.add_texts or `qdrant-sift ingest`)"
        )

    notify("select")
    started = time.perf_counter()
    n_pick = opts.clip_n(n, len(candidates))
    kernel_query, kernel_rows = query, candidates.vectors  # SIFT's kernel: recall's, or …
    if kernel is not None:  # … its own (stored, or embedded from the texts)
        inputs = kernel.inputs(prompt, candidates, client.text_key)
        if inputs is not None:  # None: the default kernel fell back to recall's
            kernel_query, kernel_rows = inputs
    selection = client.reranker.select(kernel_query, kernel_rows, n_pick, options=opts)
    select_s = time.perf_counter() - started

    picked = selection.indices.tolist()
    if texts_needed:
        payloads = {candidates.ids[i]: candidates.payloads[i] for i in picked}
    else:  # a pick deleted since the recall has no payload left: it is left out
        fetched = client.store.retrieve([candidates.ids[i] for i in picked], with_vectors=False)
        payloads = {p.id: p.payload for p in fetched}
    documents: list[Document] = []
    for index, variance in zip(picked, selection.variances.tolist(), strict=True):
        if candidates.ids[index] not in payloads:
            continue
        payload = dict(payloads[candidates.ids[index]] or {})
        text = str(payload.pop(client.text_key, ""))
        documents.append(
            Document(
                id=candidates.ids[index],
                text=text,
                score=float(candidates.scores[index]),
                uncertainty=float(variance),
                rank=len(documents),
                metadata=payload,
            )
        )
    return documents, selection, StageTimings(embed=embed_s, recall=recall_s, select=select_s)
