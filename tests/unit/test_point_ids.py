"""Point ids: every accepted form normalises to what ``str(uuid.UUID(…))`` gives, through the
fast paths too (canonical strings and ``uuid.UUID`` objects, issue 15), and UUID ids go in and
come back out of a real Qdrant Edge shard as canonical strings (its binding takes them as
strings: ``client/stores/_edge_shard.edge_id``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from qdrant_sift.client.stores import EdgeStore
from qdrant_sift.client.stores._base import normalize_id
from qdrant_sift.errors import InvalidInputError

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
