"""The vector cache's dense int-id index (client/stores/_vcache.py): every lookup it answers is
the dict's answer, and it steps aside for ids it cannot hold (issue 15: recall glue at K = 200)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from qdrant_sift.arrays import CACHE_LINE
from qdrant_sift.client.stores._vcache import VectorCache, int_keys

D = 8


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def _cache(ids: list[int | str], seed: int = 0) -> tuple[VectorCache, dict[int | str, np.ndarray]]:
    cache = VectorCache(D, None)
    rows = _rows(len(ids), seed)
    cache.put(ids, rows, None)
    return cache, {pid: rows[r] for r, pid in enumerate(ids)}


def _check(cache: VectorCache, truth: dict[int | str, np.ndarray], ids: list[int | str]) -> None:
    got = cache.take(ids)
    assert got is not None
    np.testing.assert_array_equal(got[0], np.stack([truth[i] for i in ids]))
    # fresh rows starting on a cache line (a selection then needs no aligned copy of its own)
    assert got[0].flags.c_contiguous and got[0].ctypes.data % CACHE_LINE == 0
    assert not np.shares_memory(got[0], cache._rows)
    keys = int_keys(ids)
    if keys is not None:  # the keys a recall computes once give the same rows
        again = cache.take(ids, keys)
        assert again is not None
        np.testing.assert_array_equal(again[0], got[0])


def test_kernel_rows_come_aligned_and_row_for_row() -> None:
    cache = VectorCache(D, 5)
    rows, krows = _rows(300), _rows(300, 1)[:, :5].copy()
    ids: list[int | str] = list(range(300))
    cache.put(ids, rows, krows)
    pick: list[int | str] = [7, 299, 0, 7, 150]
    got = cache.take(pick)
    assert got is not None and got[1] is not None
    np.testing.assert_array_equal(got[0], rows[[7, 299, 0, 7, 150]])
    np.testing.assert_array_equal(got[1], krows[[7, 299, 0, 7, 150]])
    assert got[1].ctypes.data % CACHE_LINE == 0 and got[1].flags.c_contiguous


def test_int_ids_are_served_by_the_index_with_the_dicts_answer() -> None:
    ids: list[int | str] = list(range(0, 3000, 3))
    cache, truth = _cache(ids)
    assert cache._dense is not None
    pick: list[int | str] = [ids[i] for i in np.random.default_rng(1).permutation(len(ids))[:200]]
    dense, by_dict = cache._dense_slots(pick), cache._dict_slots(pick)
    assert dense is not None and by_dict is not None
    np.testing.assert_array_equal(dense, by_dict)
    _check(cache, truth, pick)


def test_ids_not_held_are_refused_by_the_index_too() -> None:
    cache, _ = _cache(list(range(100)))
    assert cache.take([1, 2, 100]) is None  # inside the index's range, never put
    assert cache.take([1, 10**6]) is None  # beyond the index's size
    assert cache.take([1, "1"]) is None  # a string of digits is not the int id
    assert cache.take([1, str(uuid.uuid4())]) is None


def test_drop_and_reuse_of_slots_keep_the_index_right() -> None:
    cache, truth = _cache(list(range(50)))
    cache.drop([3, 7])
    assert cache.take([3]) is None and cache.take([0, 7]) is None
    new = _rows(2, seed=5)
    cache.put([1000, 3], new, None)  # 1000 takes a freed slot; 3 comes back
    truth[1000], truth[3] = new[0], new[1]
    _check(cache, truth, [1000, 3, 0, 49])
    assert cache.take([7]) is None


@pytest.mark.parametrize("odd", [str(uuid.uuid4()), 2**40, 2**70])
def test_an_id_the_index_cannot_hold_hands_every_lookup_to_the_dict(odd: int | str) -> None:
    cache, truth = _cache(list(range(20)))
    extra = _rows(1, seed=9)
    cache.put([odd], extra, None)
    truth[odd] = extra[0]
    assert cache._dense is None
    _check(cache, truth, [odd, 0, 19])
    assert cache.take([20]) is None


def test_saved_copy_maps_back_with_its_index(tmp_path: Path) -> None:
    cache, truth = _cache(list(range(0, 400, 2)))
    cache.drop([10])
    cache.save(tmp_path, "tok", {"points": 199})
    back = VectorCache.load(tmp_path, "tok", {"points": 199}, D, None)
    assert back is not None and back._dense is not None
    _check(back, truth, [0, 398, 12])
    assert back.take([10]) is None


def test_uuid_ids_keep_the_dict_path(tmp_path: Path) -> None:
    ids: list[int | str] = [str(uuid.uuid4()) for _ in range(30)]
    cache, truth = _cache(ids)
    assert cache._dense is None
    _check(cache, truth, ids[::-1])
    cache.save(tmp_path, "t", {})
    back = VectorCache.load(tmp_path, "t", {}, D, None)
    assert back is not None and back._dense is None
    _check(back, truth, ids[:5])


def test_uuid_keys_give_canonical_ids_and_rows(tmp_path: Path) -> None:
    ids: list[int | str] = [str(uuid.uuid4()) for _ in range(50)]
    cache, truth = _cache(ids)
    cache.drop([ids[4]])
    cache.put([ids[4]], _rows(1, seed=3), None)  # back, in a reused slot
    truth[ids[4]] = _rows(1, seed=3)[0]
    order = [ids[i] for i in (4, 0, 49, 17)]
    got = cache.take_uuids([uuid.UUID(str(i)).int for i in order])
    assert got is not None
    assert got[0] == order
    np.testing.assert_array_equal(got[1], np.stack([truth[i] for i in order]))
    cache.drop([ids[17]])
    assert cache.take_uuids([uuid.UUID(str(i)).int for i in order]) is None
    cache.save(tmp_path, "t", {})
    back = VectorCache.load(tmp_path, "t", {}, D, None)
    assert back is not None
    keys = [uuid.UUID(str(i)).int for i in order[:3]]
    again = back.take_uuids(keys)
    assert again is not None and again[0] == order[:3]
    np.testing.assert_array_equal(again[1], np.stack([truth[i] for i in order[:3]]))


@pytest.mark.parametrize("bad", [[1.5], ["not-a-uuid"], "duplicate"])
def test_a_saved_copy_with_ids_this_module_never_writes_is_refused(
    tmp_path: Path, bad: object
) -> None:
    import json

    from qdrant_sift.client.stores._vcache import VCACHE_PREFIX

    cache, _ = _cache([str(uuid.uuid4()) for _ in range(4)])
    cache.save(tmp_path, "t", {})
    meta_path = tmp_path / f"{VCACHE_PREFIX}.json"
    meta = json.loads(meta_path.read_text())
    meta["slots"][1] = meta["slots"][0] if bad == "duplicate" else bad[0]  # type: ignore[index]
    meta_path.write_text(json.dumps(meta))
    assert VectorCache.load(tmp_path, "t", {}, D, None) is None
