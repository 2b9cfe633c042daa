"""EdgeStore's vector cache is saved at a clean close and mapped back only while it matches.

A stale copy would hand SIFT wrong vectors silently, so every way the saved files can stop
matching the shard is exercised: a write before the first recall, a crash, tampered rows, a
foreign token, and the saved rows are checked bit for bit against the engine's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

from qdrant_sift.client.stores import EdgeStore
from qdrant_sift.client.stores._integrity import MANIFEST_NAME
from qdrant_sift.client.stores._vcache import VCACHE_PREFIX

ROWS = Path(f"{VCACHE_PREFIX}.rows.npy")
META = Path(f"{VCACHE_PREFIX}.json")


def _data(n: int = 300, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _filled(path: Path, x: np.ndarray, ids: list[Any] | None = None) -> list[Any]:
    ids = list(range(len(x))) if ids is None else ids
    with EdgeStore(path, "c") as store:
        store.create(x.shape[1])
        store.upsert(ids, x, [{"i": i} for i in range(len(x))])
        store.recall(x[0], 10)  # builds the cache: saved by the clean close
    return ids


def _engine_rows(store: EdgeStore, ids: list[Any]) -> np.ndarray:
    return store._engine_fetch(ids, False).vectors


def _manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "c" / MANIFEST_NAME).read_text()))


def test_saved_at_clean_close_and_mapped_back_bit_for_bit(tmp_path: Path) -> None:
    x = _data()
    _filled(tmp_path, x)
    token = _manifest(tmp_path)["vcache"]
    assert token and (tmp_path / "c" / ROWS).exists()
    with EdgeStore(tmp_path, "c") as store:
        cand = store.recall(x[5], 50)
        cache = store._vcache
        assert cache is not None and not cache.changed
        assert cache.mapped  # mapped back, not rebuilt by a scroll
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))
    assert _manifest(tmp_path)["vcache"] == token  # unchanged copy: files kept as they are


def test_reopen_without_recall_keeps_the_saved_copy(tmp_path: Path) -> None:
    x = _data()
    _filled(tmp_path, x)
    token = _manifest(tmp_path)["vcache"]
    with EdgeStore(tmp_path, "c") as store:
        assert store.count() == len(x)
    assert _manifest(tmp_path)["vcache"] == token
    with EdgeStore(tmp_path, "c") as store:
        store.recall(x[1], 5)
        assert store._vcache.mapped


def test_a_write_before_the_first_recall_refuses_the_saved_copy(tmp_path: Path) -> None:
    """Same id set (the point state matches), new vector: the saved row is stale."""
    x = _data()
    _filled(tmp_path, x)
    with EdgeStore(tmp_path, "c") as store:
        store.upsert([7], -x[7:8], [{"i": 7}])
        cand = store.recall(-x[7], 5, both_directions=False)
        assert cand.ids[0] == 7
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))
        assert not store._vcache.mapped  # rebuilt from the shard
    with EdgeStore(tmp_path, "c") as store:  # and the new copy is what was saved
        cand = store.recall(-x[7], 5, both_directions=False)
        assert cand.ids[0] == 7 and store._vcache.mapped
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))


def test_writes_after_mapping_back_are_saved_anew(tmp_path: Path) -> None:
    x = _data()
    _filled(tmp_path, x)
    old = _manifest(tmp_path)["vcache"]
    with EdgeStore(tmp_path, "c") as store:
        store.recall(x[0], 5)
        store.upsert([3, 1000], np.stack([-x[3], x[3]]), [{"i": 3}, {"i": 1000}])
        store.delete([4])
    assert _manifest(tmp_path)["vcache"] not in (None, old)
    with EdgeStore(tmp_path, "c") as store:
        cand = store.recall(x[3], 300, both_directions=False)
        assert 4 not in cand.ids and 1000 in cand.ids and len(store._vcache) == len(x)
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))


_CRASH = """
import os, sys, numpy as np
from qdrant_sift.client.stores import EdgeStore
s = EdgeStore(sys.argv[1], "c")
x = np.load(sys.argv[2])
s.upsert([9], -x[9:10], [{"i": 9}])
os._exit(0)  # no close: the manifest stays unclean
"""


def test_a_crash_discards_the_saved_copy(tmp_path: Path) -> None:
    x = _data()
    _filled(tmp_path / "s", x)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path / "s"), str(tmp_path / "x.npy")], check=True
    )
    assert not _manifest(tmp_path / "s")["clean"]
    with EdgeStore(tmp_path / "s", "c") as store:
        assert not (tmp_path / "s" / "c" / ROWS).exists()  # discarded at the open
        cand = store.recall(-x[9], 5, both_directions=False)
        assert cand.ids[0] == 9
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))


def test_tampered_rows_are_refused_by_the_spot_check(tmp_path: Path) -> None:
    x = _data()
    _filled(tmp_path, x)
    rows = np.load(tmp_path / "c" / ROWS, mmap_mode="r+")
    rows[:] = 0.5  # same size and shape: only the spot check can notice
    rows.flush()
    del rows
    with EdgeStore(tmp_path, "c") as store:
        cand = store.recall(x[2], 40)
        assert not store._vcache.mapped
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))


@pytest.mark.parametrize("damage", ["token", "truncate", "meta"])
def test_a_mismatching_copy_is_rebuilt(tmp_path: Path, damage: str) -> None:
    x = _data()
    _filled(tmp_path, x)
    folder = tmp_path / "c"
    if damage == "token":
        meta = json.loads((folder / META).read_text())
        meta["token"] = uuid.uuid4().hex
        (folder / META).write_text(json.dumps(meta))
    elif damage == "truncate":
        with open(folder / ROWS, "r+b") as fh:
            fh.truncate(200)
    else:
        (folder / META).write_text("{not json")
    with EdgeStore(tmp_path, "c") as store:
        cand = store.recall(x[2], 40)
        assert not store._vcache.mapped
        np.testing.assert_array_equal(cand.vectors, _engine_rows(store, cand.ids))


def test_uuid_ids_and_kernel_rows_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    kv = rng.standard_normal((60, 4)).astype(np.float32)
    ids = [str(uuid.UUID(int=int(i) + 1)) for i in range(60)]
    with EdgeStore(tmp_path, "c") as store:
        store.create(8, kernel_dim=4)
        store.upsert(ids, x, kernel_vectors=kv)
        first = store.recall(x[0], 20, with_kernel=True)
    with EdgeStore(tmp_path, "c") as store:
        again = store.recall(x[0], 20, with_kernel=True)
        assert store._vcache.mapped
        assert again.ids == first.ids
        np.testing.assert_array_equal(again.vectors, first.vectors)
        np.testing.assert_array_equal(again.kernel_vectors, first.kernel_vectors)


def test_cache_off_saves_nothing_and_drop_removes_the_copy(tmp_path: Path) -> None:
    x = _data()
    with EdgeStore(tmp_path, "c", vector_cache=False) as store:
        store.create(8)
        store.upsert(list(range(50)), x[:50])
        store.recall(x[0], 10)
    assert _manifest(tmp_path)["vcache"] is None and not (tmp_path / "c" / ROWS).exists()
    _filled(tmp_path / "b", x)
    with EdgeStore(tmp_path / "b", "c") as store:
        store.drop()
        assert not (tmp_path / "b" / "c").exists()
