"""Kernel vectors beyond the congruence suite: a QdrantStore's own recall vector name, the merge
of both directions on its own, and `qdrant-sift ingest --kernel` refusing a collection of the
other layout before any model loads."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pytest
from conftest_stores_kernel import KDIM, RDIM, kernel_points, stored_layout, unit

from qdrant_sift.client.stores import KERNEL_VECTOR, EdgeStore, QdrantStore
from qdrant_sift.client.stores._hits import Hits, merge_directions
from qdrant_sift.errors import ConfigError


def test_qdrant_store_names_its_own_recall_vector() -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    ids, vecs, kern, payloads = kernel_points(40)
    with QdrantStore("named", client=client, vector_name="dense") as store:
        store.create(RDIM, kernel_dim=KDIM)
        assert stored_layout(store) == {"dense": RDIM, KERNEL_VECTOR: KDIM}
        store.upsert(ids, vecs, payloads, kernel_vectors=kern)
        cand = store.recall(vecs[4], 5, with_kernel=True)
        assert cand.ids[0] == ids[4]
        np.testing.assert_allclose(cand.kernel_vectors[0], unit(kern[4]), atol=1e-5)
    with pytest.raises(ConfigError, match="vector_name"):
        _ = QdrantStore("named", client=client).dim  # named vectors, none of them ours by default
    with pytest.raises(ConfigError, match="reserved"):
        QdrantStore("other", client=client, vector_name=KERNEL_VECTOR).create(RDIM, kernel_dim=KDIM)
    client.close()


def test_merge_keeps_kernel_rows_with_their_points() -> None:
    def hits(ids: list[int], scores: list[float]) -> Hits:
        rows = np.array([[float(i)] * 2 for i in ids], np.float32)
        return Hits(ids, np.array(scores, np.float32), rows, [{"i": i} for i in ids], rows * 10)

    merged = merge_directions(hits([1, 2, 3], [0.9, 0.5, 0.1]), hits([4, 2, 5], [0.8, 0.3, 0.2]), 4)
    assert merged.ids == [1, 4, 2, 5] and merged.kernel_vectors is not None
    np.testing.assert_array_equal(merged.kernel_vectors[:, 0], [10, 40, 20, 50])
    np.testing.assert_array_equal(merged.vectors[:, 0] * 10, merged.kernel_vectors[:, 0])


@pytest.mark.parametrize("has_kernel", [False, True])
def test_cli_refuses_the_other_layout_before_loading_a_model(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, has_kernel: bool
) -> None:
    import qdrant_sift.finetune as finetune
    from qdrant_sift.client._cmd_ingest import _kernel_embedder

    def no_model(*_: Any, **__: Any) -> Any:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(finetune, "load_model", no_model)
    with EdgeStore(tmp_path, "docs") as store:
        store.create(RDIM, kernel_dim=KDIM if has_kernel else None)
        args = argparse.Namespace(kernel=None if has_kernel else "model-mean", device=None)
        with pytest.raises(ConfigError, match="kernel"):
            _kernel_embedder(args, store)
        args.kernel = "model-mean" if has_kernel else None
        if not has_kernel:
            assert _kernel_embedder(args, store) is None
