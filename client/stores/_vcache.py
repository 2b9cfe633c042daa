"""An in-memory copy of a collection's vectors as float32 rows, for recall without conversion.

Qdrant Edge's Python binding hands every fetched vector back as a list of Python floats: for
K = 200 × 384 that conversion (engine → Python floats → float32 array) costs several times the
HNSW query itself. With the copy, recall asks the engine for ids, scores and payloads only and
gathers the vectors from here, one numpy take. The rows are read back from the engine after every
write (never computed here), so they are bit for bit what the engine stores: cosine collections
hold unit vectors normalised by the engine.

The copy lives in RAM only (rebuilt from the shard on first use after opening), costs
n × (d + d_kernel) × 4 bytes, and is kept row for row with the shard under the store's write lock.
A recall running while another thread writes may see a replaced point's previous vector (the
engine is written first, then the copy); an id the copy does not hold yet is read from the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._base import PointId

__all__ = ["VectorCache"]


class VectorCache:
    """Float32 rows of recall (and kernel) vectors by point id; slots of deleted ids are reused."""

    def __init__(self, dim: int, kernel_dim: int | None) -> None:
        self.dim, self.kernel_dim = dim, kernel_dim
        self._rows = np.empty((0, dim), np.float32)
        self._krows = None if kernel_dim is None else np.empty((0, kernel_dim), np.float32)
        self._slot: dict[PointId, int] = {}
        self._free: list[int] = []
        self._used = 0  # slots ever handed out (the high-water mark)

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
                else:
                    s, self._used = self._used, self._used + 1
                self._slot[pid] = s
            slots[r] = s
        self._rows[slots] = rows
        if self._krows is not None and krows is not None:
            self._krows[slots] = krows

    def drop(self, ids: Iterable[PointId]) -> None:
        for pid in ids:
            s = self._slot.pop(pid, None)
            if s is not None:
                self._free.append(s)

    def take(self, ids: Sequence[PointId]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Rows of ``ids`` in order (fresh arrays), or None when any id is not held."""
        try:
            slots = [self._slot[i] for i in ids]
        except KeyError:
            return None
        krows = None if self._krows is None else self._krows[slots]
        return self._rows[slots], krows
