"""An in-memory copy of a collection's vectors as float32 rows, for recall without conversion.

Qdrant Edge's Python binding hands every fetched vector back as a list of Python floats: for
K = 200 × 384 that conversion (engine → Python floats → float32 array) costs several times the
HNSW query itself. With the copy, recall asks the engine for ids, scores and payloads only and
gathers the vectors from here, one numpy take. The rows are read back from the engine after every
write (never computed here), so they are bit for bit what the engine stores: cosine collections
hold unit vectors normalised by the engine.

The copy is built from the shard on the first recall (one scroll, a few seconds per 100k × 384),
costs n × (d + d_kernel) × 4 bytes, and is kept row for row with the shard under the store's
write lock. Its id indexes: a dict by id; a dense int32 array by id while every id is a small
unsigned int; for UUID ids a dict by the UUID's int, so the engine's ``uuid.UUID`` objects are
looked up without being formatted (about 0.1 µs instead of 0.5 µs an id; the index costs ~90
bytes an id; a 1M-point copy maps back in ~0.9 s with it). A recall running while another
thread writes may see a replaced point's previous vector (the engine is written first, then the
copy); an id the copy does not hold yet is read from the engine.

Persistence: a clean close saves the copy beside the shard (:meth:`VectorCache.save`, files
``qdrant_sift.vcache.*``, fsynced before the clean manifest names their token) and the next open
maps it back (:meth:`VectorCache.load`, ``mmap_mode="c"``: pages are read on demand and writes
stay private until the next save), so a reopened collection pays neither the scroll nor the RAM
up front. The files count only when the manifest was written by a clean close with their token
and the point state they were saved with; after a crash the copy is rebuilt from the shard. Like
the engine's own data files, bytes changed inside them without a change of size are not looked
for beyond a spot check of a few rows against the engine (the store's ``_saved_cache``).
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.arrays import aligned_empty

from ._hits import PointId, all_ints

__all__ = ["VCACHE_PREFIX", "VectorCache", "int_keys"]

#: Names of the saved copy's files inside the shard folder (the manifest's fingerprint skips them).
VCACHE_PREFIX = "qdrant_sift.vcache"
_META = f"{VCACHE_PREFIX}.json"
_ROWS = f"{VCACHE_PREFIX}.rows.npy"
_KROWS = f"{VCACHE_PREFIX}.krows.npy"
_FORMAT = 1


def _dense_limit(held: int) -> int:
    """Largest int id + 1 the dense index takes for ``held`` ids: a few int32 per held id."""
    return 4 * held + (1 << 16)


def int_keys(ids: Sequence[PointId]) -> np.ndarray | None:
    """``ids`` as an int64 array when every one is an unsigned int (else None: numpy would also
    read a string of digits or a float as one). A recall computes it once for both its own check
    and the cache's lookup (:meth:`VectorCache.take`'s ``keys``)."""
    if not ids or not all_ints(ids):
        return None
    try:
        keys = np.fromiter(ids, np.int64, len(ids))
    except OverflowError:  # beyond int64: not a small id
        return None
    return None if keys.min() < 0 else keys


def _uuid_int(pid: str) -> int:
    """``uuid.UUID(pid).int`` of a canonical UUID string (a normalised id), without the object."""
    return int(pid.replace("-", ""), 16)


def _take(rows: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """``rows[slots]`` into a new cache-line-aligned array. The slots come from the index, so
    in range: ``mode="clip"`` only spares numpy the buffered copy that ``out`` costs under the
    default ``mode="raise"``."""
    out = aligned_empty((len(slots), rows.shape[1]), rows.dtype)
    np.take(rows, slots, axis=0, out=out, mode="clip")
    return out


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


class VectorCache:
    """Float32 rows of recall (and kernel) vectors by point id; slots of deleted ids are reused."""

    def __init__(self, dim: int, kernel_dim: int | None) -> None:
        self.dim, self.kernel_dim = dim, kernel_dim
        self._rows = np.empty((0, dim), np.float32)
        self._krows = None if kernel_dim is None else np.empty((0, kernel_dim), np.float32)
        self._slot: dict[PointId, int] = {}
        # slot by int id (-1: not held) while every held id is a small unsigned int: the lookup
        # of K ids is then one numpy gather instead of K dict probes (each a few cache misses
        # in a dict of n entries: ~0.06 ms of K = 200 at 100k points); None once any id is not
        self._dense: np.ndarray | None = np.full(0, -1, np.int32)
        # slot by UUID (as an int) and id by slot: a recall on a UUID collection looks its rows
        # up from the engine's uuid.UUID objects without formatting them (str() costs ~0.5 µs
        # an id, 0.1 ms of K = 200) and takes the canonical strings from here
        self._uslot: dict[int, int] = {}
        self._slot_ids: list[PointId | None] = []
        self._free: list[int] = []
        self._used = 0  # slots ever handed out (the high-water mark)
        self.changed = True  # since it was loaded or saved (a new copy has never been saved)
        self.mapped = False  # rows mapped back from a saved copy (not built by a scroll)

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes + (0 if self._krows is None else self._krows.nbytes)

    def _grow(self, need: int) -> None:
        cap = self._rows.shape[0]
        if need <= cap:
            return
        cap = max(need, 2 * cap, 1024)
        rows = np.empty((cap, self.dim), np.float32)
        rows[: self._used] = self._rows[: self._used]
        self._rows = rows
        if self._krows is not None:
            krows = np.empty((cap, self._krows.shape[1]), np.float32)
            krows[: self._used] = self._krows[: self._used]
            self._krows = krows

    def put(self, ids: Sequence[PointId], rows: np.ndarray, krows: np.ndarray | None) -> None:
        """Insert or replace rows (``krows`` row for row when the collection has a kernel)."""
        new = sum(1 for i in dict.fromkeys(ids) if i not in self._slot)
        self._grow(self._used + max(0, new - len(self._free)))
        slots = np.empty(len(ids), np.int64)
        for r, pid in enumerate(ids):
            s = self._slot.get(pid)
            if s is None:
                if self._free:
                    s = self._free.pop()
                    self._slot_ids[s] = pid
                else:
                    s, self._used = self._used, self._used + 1
                    self._slot_ids.append(pid)
                self._slot[pid] = s
                if type(pid) is str:
                    self._uslot[_uuid_int(pid)] = s
            slots[r] = s
        self._rows[slots] = rows
        if self._krows is not None and krows is not None:
            self._krows[slots] = krows
        self._index(ids, slots)
        self.changed = True

    def _index(self, ids: Sequence[PointId], slots: np.ndarray) -> None:
        """Record ``ids`` → ``slots`` in the dense index, or give the index up for good."""
        if self._dense is None or not len(ids):
            return
        keys = int_keys(ids)
        top = -1 if keys is None else int(keys.max())
        if keys is None or top >= _dense_limit(len(self._slot)):
            self._dense = None  # ids the index cannot hold: the dict serves every lookup
            return
        if top >= self._dense.size:
            grown = np.full(max(top + 1, 2 * self._dense.size, 1024), -1, np.int32)
            grown[: self._dense.size] = self._dense
            self._dense = grown
        self._dense[keys] = slots

    def drop(self, ids: Iterable[PointId]) -> None:
        for pid in ids:
            s = self._slot.pop(pid, None)
            if s is not None:
                self._free.append(s)
                self._slot_ids[s] = None
                if type(pid) is str:
                    self._uslot.pop(_uuid_int(pid), None)
                self.changed = True
                if self._dense is not None:
                    self._dense[pid] = -1  # held, so a small unsigned int

    def take(
        self, ids: Sequence[PointId], keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Rows of ``ids`` in order (fresh arrays), or None when any id is not held. ``keys``:
        :func:`int_keys` of ``ids`` when the caller has it already."""
        slots = self._dense_slots(ids, keys)
        if slots is None:
            slots = self._dict_slots(ids)
        return None if slots is None else self._gather(slots)

    def _gather(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Fresh (rows, kernel rows or None) of ``slots``, in order, each starting on a cache
        line, so a selection over them needs no aligned copy of its own (~30 µs of a cold
        ``select`` at K = 200, d = 384)."""
        return _take(self._rows, slots), None if self._krows is None else _take(self._krows, slots)

    def take_uuids(
        self, keys: Sequence[int]
    ) -> tuple[list[PointId], np.ndarray, np.ndarray | None] | None:
        """(canonical ids, rows, kernel rows) of the UUIDs ``keys`` (``uuid.UUID.int``), in
        order; None when any is not held."""
        if len(keys) < 2:  # itemgetter of one key returns the value, not a tuple: the dict path
            return None
        try:
            got = operator.itemgetter(*keys)(self._uslot)
        except KeyError:
            return None
        ids: list[PointId] = list(operator.itemgetter(*got)(self._slot_ids))
        return ids, *self._gather(np.fromiter(got, np.intp, len(keys)))

    def _dense_slots(
        self, ids: Sequence[PointId], keys: np.ndarray | None = None
    ) -> np.ndarray | None:
        """Slots of ``ids`` from the dense index; None when it cannot answer (then the dict)."""
        dense = self._dense
        if dense is None or not len(ids):
            return None
        if keys is None:
            keys = int_keys(ids)
        if keys is None or keys.max() >= dense.size:
            return None
        slots = dense[keys]
        return None if slots.min() < 0 else slots

    def _dict_slots(self, ids: Sequence[PointId]) -> np.ndarray | None:
        try:  # one C-level lookup of every id (a Python loop costs ~4× as much at K = 200)
            got = (
                operator.itemgetter(*ids)(self._slot)
                if len(ids) > 1
                else [self._slot[i] for i in ids]
            )
        except KeyError:
            return None
        return np.fromiter(got, np.intp, len(ids))

    def sample(self, n: int) -> list[PointId]:
        """Up to ``n`` held ids spread evenly over the copy (for a spot check)."""
        ids = list(self._slot)
        step = max(1, len(ids) // max(n, 1))
        return ids[::step][:n]

    def save(self, folder: Path, token: str, state: dict[str, Any]) -> None:
        """Write the copy to ``folder`` (each file fsynced, then renamed into place; the meta file
        last), tagged with ``token`` and the store's point ``state``."""
        used = self._used
        slot_ids = self._slot_ids[:used]
        arrays = [(_ROWS, self._rows[:used])]
        if self._krows is not None:
            arrays.append((_KROWS, self._krows[:used]))
        for name, arr in arrays:
            tmp = folder / f"{name}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
            _fsync_replace(tmp, folder / name)
        meta = {
            "format": _FORMAT,
            "token": token,
            "state": state,
            "dim": self.dim,
            "kernel_dim": self.kernel_dim,
            "slots": slot_ids,
        }
        tmp = folder / f"{_META}.tmp"
        tmp.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
        _fsync_replace(tmp, folder / _META)
        self.changed = False

    @classmethod
    def load(
        cls, folder: Path, token: str, state: dict[str, Any], dim: int, kernel_dim: int | None
    ) -> VectorCache | None:
        """The copy saved with ``token`` and ``state`` for these dimensions, mapped
        copy-on-write; None when there is none or it does not match (then rebuild it)."""
        try:
            meta = json.loads((folder / _META).read_text(encoding="utf-8"))
            if (
                not isinstance(meta, dict)
                or meta.get("format") != _FORMAT
                or meta.get("token") != token
                or meta.get("state") != state
                or meta.get("dim") != dim
                or meta.get("kernel_dim") != kernel_dim
            ):
                return None
            slot_ids = list(meta["slots"])
            rows = np.load(folder / _ROWS, mmap_mode="c", allow_pickle=False)
            krows = None
            if kernel_dim is not None:
                krows = np.load(folder / _KROWS, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        used = len(slot_ids)
        for arr, width in ((rows, dim), (krows, kernel_dim)):
            if arr is not None and (arr.dtype != np.float32 or arr.shape != (used, width)):
                return None
        cache = cls(dim, kernel_dim)
        # plain ndarray views of the maps (numpy's memmap subclass adds ~0.1 ms to every take)
        cache._rows = rows.view(np.ndarray)
        cache._krows = None if krows is None else krows.view(np.ndarray)
        cache._used, cache.mapped = used, True
        kinds = {type(pid) for pid in slot_ids}
        if not kinds <= {int, str, type(None)}:
            return None  # not a copy this module wrote: rebuild
        cache._slot_ids = slot_ids
        cache._slot = {pid: s for s, pid in enumerate(slot_ids) if pid is not None}
        cache._free = [s for s, pid in enumerate(slot_ids) if pid is None]
        if len(cache._slot) + len(cache._free) != used:
            return None  # an id in two slots
        if str in kinds:
            try:
                cache._uslot = {
                    _uuid_int(pid): s for s, pid in enumerate(slot_ids) if type(pid) is str
                }
            except ValueError:  # a string that is not a canonical UUID
                return None
        held = len(cache._slot)
        cache._index(list(cache._slot), np.fromiter(cache._slot.values(), np.int32, held))
        cache.changed = False
        return cache

    @staticmethod
    def discard(folder: Path) -> None:
        """Delete a saved copy (stale after a crash: it would only be refused)."""
        for name in (_META, _ROWS, _KROWS):
            for path in (folder / name, folder / f"{name}.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
