"""Point ids: every accepted form normalises to what ``str(uuid.UUID(…))`` gives, through the
fast paths too (canonical strings and ``uuid.UUID`` objects, issue 15), and UUID ids go in and
come back out of a real Qdrant Edge shard as canonical strings (its binding takes them as
strings: ``client/stores/_edge_shard.edge_id``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from qdrant_sift.client.stores import EdgeStore, QdrantStore, VectorStore
from qdrant_sift.client.stores._edge_shard import edge_id, edge_ids
from qdrant_sift.client.stores._hits import all_ints
from qdrant_sift.client.stores._points import normalize_id, normalize_ids, prepare_query
from qdrant_sift.client.stores._vcache import VectorCache
from qdrant_sift.errors import DimensionMismatchError, InvalidInputError, NonFiniteError

U = uuid.UUID("3ad528fd-9605-5448-acac-83171e953f05")


@pytest.mark.parametrize(
    "given",
    [str(U), str(U).upper(), U.hex, "{" + str(U) + "}", "urn:uuid:" + str(U), U],
    ids=["canonical", "upper", "hex", "braces", "urn", "object"],
)
def test_uuid_forms_normalise_to_the_canonical_string(given: object) -> None:
    assert normalize_id(given) == str(U)


@pytest.mark.parametrize(
    "bad", ["3ad528fd-9605-5448-acac-83171e953f0g", "3ad528fd-9605-5448-acac-83171e953f0", -1, 1.0]
)
def test_near_misses_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        normalize_id(bad)


def test_uuid_ids_round_trip_through_an_edge_shard(tmp_path: Path) -> None:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")) for i in range(40)]
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    with EdgeStore(tmp_path, "u") as store:
        store.create(8)
        store.upsert([i.upper() for i in ids], x, [{"i": i} for i in range(40)])
        got = store.retrieve([ids[3], ids[7].upper(), ids[3]], with_vectors=False)
        assert [p.id for p in got] == [ids[3], ids[7]]
        assert [p.payload["i"] for p in got] == [3, 7]
        cand = store.recall(x[5], 10, with_payload=False)
        assert cand.ids[0] == ids[5] and all(i in ids for i in cand.ids)
        store.delete([ids[5]])
        assert store.count() == 39 and store.retrieve([ids[5]]) == []


def test_recall_on_uuid_and_mixed_collections_matches_the_engines_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[int] = []
    take = VectorCache.take_uuids

    def counted(self: VectorCache, keys: Sequence[int]) -> Any:
        got = take(self, keys)
        served.append(0 if got is None else len(keys))
        return got

    monkeypatch.setattr(VectorCache, "take_uuids", counted)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    uuids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"m{i}")) for i in range(40)]
    with EdgeStore(tmp_path, "m") as store:
        store.create(8)
        store.upsert(uuids, x[:40], [{"i": i} for i in range(40)])
        cached = store.recall(x[2], 20, both_directions=False)  # the cache's UUID path
        assert cached.ids[0] == uuids[2] and cached.payloads[0] == {"i": 2}
        assert served == [20]  # served by the cache's UUID index, nothing formatted
        store.delete([uuids[7]])  # a held id gone: the general path must not return it
        after = store.recall(x[7], 20, both_directions=False)
        assert uuids[7] not in after.ids
        store.upsert(list(range(20)), x[40:], [{"i": 40 + i} for i in range(20)])  # ints too
        mixed = store.recall(x[45], 60, both_directions=False)
        assert 5 in mixed.ids and uuids[2] in mixed.ids
        with EdgeStore(tmp_path / "plain", "m", vector_cache=False) as ref:
            ref.create(8)
            ref.upsert(uuids, x[:40], [{"i": i} for i in range(40)])
            ref.delete([uuids[7]])
            ref.upsert(list(range(20)), x[40:], [{"i": 40 + i} for i in range(20)])
            for q in (x[2], x[45], -x[9]):
                a, b = store.recall(q, 30), ref.recall(q, 30)
                assert a.ids == b.ids and a.payloads == b.payloads
                np.testing.assert_array_equal(a.vectors, b.vectors)


def test_normalize_ids_passes_unsigned_ints_and_normalises_the_rest() -> None:
    """The one-pass route for a list of ints gives what :func:`normalize_id` of each gives, and
    anything else (a numpy int, a bool, a negative int, a UUID among ints) takes it per id."""
    assert normalize_ids([3, 1, 2]) == [3, 1, 2]
    assert normalize_ids(iter([5])) == [5] and normalize_ids([]) == []
    got = normalize_ids([np.int64(7), 1, U])
    assert got == [7, 1, str(U)] and type(got[0]) is int
    for bad in ([1, -1], [1, True], [2, 1.0]):
        with pytest.raises(InvalidInputError):
            normalize_ids(bad)
    assert not all_ints([1, True]) and not all_ints([np.int64(1)]) and all_ints([0, 2**70])


def _engine_points(pid: object) -> list[Any]:
    """Two engine points (scored or records) as the stores read them, the second with ``pid``."""
    return [SimpleNamespace(id=i, score=1.0, vector=[1.0] * 8, payload={}) for i in (0, pid)]


def _call_sites(store: VectorStore) -> dict[str, Callable[[object], object]]:
    """Every store call site that normalises a list of ids with :func:`normalize_ids`, each
    given one bad id among good ones: the callers' ids (upsert, delete, retrieve) and the
    engine's (the hits of a search or fetch)."""
    x = np.ones((2, 8), np.float32)
    sites: dict[str, Callable[[object], object]] = {
        "upsert": lambda pid: store.upsert([0, pid], x),
        "delete": lambda pid: store.delete([0, pid]),
        "hits": lambda pid: store._hits(_engine_points(pid), False, scored=True),
    }
    if isinstance(store, QdrantStore):
        sites["retrieve"] = lambda pid: store.retrieve([0, pid])

        def ids_only(pid: object) -> object:  # the −q probe's answer: ids and scores only
            answer = [SimpleNamespace(points=_engine_points(pid))]
            store._client.query_batch_points = lambda *a, **kw: answer
            return store._search([x[0]], 2, None, {}, False, vectors=[False])

        sites["search ids only"] = ids_only
    return sites


@pytest.mark.parametrize("backend", ["edge", "qdrant"])
@pytest.mark.parametrize(
    "bad", [True, False, -1, np.int64(-3)], ids=["true", "false", "-1", "np-3"]
)
def test_every_id_list_call_site_refuses_bools_and_negatives_like_normalize_id(
    tmp_path: Path, backend: str, bad: object
) -> None:
    """The one-pass :func:`normalize_ids` at each call site refuses a bool or a negative id with
    the error (class and message) that :func:`normalize_id` gives for it, and writes nothing."""
    with pytest.raises(InvalidInputError) as want:
        normalize_id(bad)
    store: VectorStore = (
        EdgeStore(tmp_path, "bad") if backend == "edge" else QdrantStore("bad", location=":memory:")
    )
    with store:
        store.create(8)
        for name, call in _call_sites(store).items():
            with pytest.raises(InvalidInputError, match=re.escape(str(want.value))):
                call(bad)
            assert store.count() == 0, name


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([float("nan")] + [1.0] * 3, NonFiniteError),
        ([float("inf")] + [1.0] * 3, NonFiniteError),
        ([0.0] * 4, InvalidInputError),
        ([1e30] * 4, None),  # its dot overflows: the general route accepts it
        ([1e-30] * 4, None),  # its dot underflows to 0: not the zero vector
        ([0.0, 0.0, 0.0, -2.5], None),
    ],
)
def test_prepare_query_routes_agree(values: list[float], error: type[Exception] | None) -> None:
    """A float32 vector of the right size takes one dot instead of the array checks; every
    value the dot cannot vouch for goes the general way, with the same verdict and bits."""
    q = np.asarray(values, np.float32)
    for given in (q, q.tolist(), q.astype(">f4"), np.asarray(values, np.float64)):
        if error is not None:
            with pytest.raises(error):
                prepare_query(given, 4)
            continue
        got = prepare_query(given, 4)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, q)
        if isinstance(given, np.ndarray):
            assert not np.shares_memory(got, given)
    with pytest.raises(DimensionMismatchError):
        prepare_query(np.ones(4, np.float32), 5)


def test_edge_ids_is_edge_id_of_each() -> None:
    """The list form skips a call per id; it must give what the per-id rule gives."""
    ids = normalize_ids([0, 7, 2**63 - 1, U, str(U).upper()])
    assert edge_ids(ids) == [edge_id(i) for i in ids]
