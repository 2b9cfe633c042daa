"""Reusable scratch memory for the single-prompt engine, kept out of forked children.

Why reuse: a K=200 selection writes a K×(K+m) Gram block and ~80 KB of float64 state. Fresh
arrays of that size come from pages the allocator may have handed back to the kernel, and every
first touch of such a page is a fault. Why out of forked children (``MADV_DONTFORK``): a process
that forks (torch ``DataLoader`` workers; activeft's ``Retriever.search`` forks one per call)
write-protects every page it owns, and the parent's first write to each page afterwards is a
copy-on-write fault, about 1 µs each. Measured after one such fork (K=200, N=50, d=768): ~370
faults in the next ``select``, ~60 of them in the Gram block and the state; a region that is
not shared with the child is written without a fault. The rest (numpy's BLAS packing buffers,
the interpreter's own objects) is not ours to place.

Regions are pooled, not per thread: :func:`take` pops one (or maps a new one), :func:`give`
pushes it back, so threads selecting at once each hold their own and a thread pool reuses them.
At most :data:`POOL_MAX` regions of at most :data:`REGION_MAX` bytes are kept; larger requests
get ``None`` and the caller allocates as before.

Fork safety: a child has none of these regions mapped. After a fork the child drops the pool
(``os.register_at_fork``) and keeps the dropped objects alive for good, so their ``munmap`` can
never run there (that address range may hold something else in the child). Where
``MADV_DONTFORK`` does not exist the regions are plain numpy memory (reuse only).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

__all__ = ["POOL_MAX", "REGION_MAX", "Region", "arrays", "give", "take"]

POOL_MAX = 8  # regions kept: one per thread selecting at once, up to this many
REGION_MAX = 4 << 20  # larger scratch is allocated per call, as before (K up to ~700 fits)
_GRAIN = 64 << 10  # sizes round up to this, so nearby sizes share a region
_DONTFORK = getattr(mmap, "MADV_DONTFORK", None)
_F64 = np.dtype(np.float64)

_pool: list[Region] = []
_forked_away: list[Region] = []  # regions a child inherited the objects of, never freed there
_generation = 0  # bumped in a forked child: regions of an older generation are not mapped


class Region:
    """One block of scratch bytes (``mem``: a uint8 array; ``words``: the same as float64),
    page-aligned where mmap'd."""

    __slots__ = ("_map", "generation", "mem", "words")

    def __init__(self, nbytes: int) -> None:
        self.generation = _generation
        self._map: mmap.mmap | None = None
        if _DONTFORK is not None:
            m = mmap.mmap(-1, nbytes)
            try:
                m.madvise(_DONTFORK)
            except OSError:  # refused (an old or restricted kernel): plain memory then
                m.close()
            else:
                self._map = m
                self.mem = np.frombuffer(m, np.uint8)
                self.words = self.mem.view(np.float64)
                return
        self.mem = np.empty(nbytes, np.uint8)
        self.words = self.mem.view(np.float64)  # the whole region as float64 (sizes are 64K steps)

    def array(self, offset: int, dtype: np.dtype[Any], rows: int, cols: int) -> np.ndarray:
        """A C-contiguous ``dtype`` (rows, cols) view at byte ``offset`` (a multiple of 64)."""
        end = offset + rows * cols * dtype.itemsize
        return self.mem[offset:end].view(dtype).reshape(rows, cols)


def take(nbytes: int) -> Region | None:
    """A region of at least ``nbytes`` (the caller owns it until :func:`give`), or None when
    ``nbytes`` exceeds :data:`REGION_MAX`."""
    if nbytes > REGION_MAX:
        return None
    try:
        region = _pool.pop()  # atomic: concurrent callers never get the same region
    except IndexError:
        region = None
    if region is None or region.mem.size < nbytes:
        region = Region(max(1, -(-nbytes // _GRAIN)) * _GRAIN)  # a too-small one is freed
    return region


def arrays(
    dtype: np.dtype[Any], rows: int, cols: int, n_f64: int
) -> tuple[Region | None, np.ndarray, np.ndarray | None]:
    """A (rows, cols) ``dtype`` block and, if ``n_f64``, a float64 vector of that length: views
    of one pooled region (hand it to :func:`give` when done), or, when ``n_f64`` is 0 or the
    two are too big to pool, a fresh block, no vector and no region."""
    head = -(-rows * cols * dtype.itemsize // 64) * 64
    region = take(head + 8 * n_f64) if n_f64 else None
    if region is None:
        return None, np.empty((rows, cols), dtype), None
    return region, region.array(0, dtype, rows, cols), region.array(head, _F64, 1, n_f64)[0]


def give(region: Region | None) -> None:
    """Return ``region`` to the pool (dropped when the pool is full; kept alive for good when it
    predates a fork, as it is not mapped in this child)."""
    if region is None:
        return
    if region.generation != _generation:
        _forked_away.append(region)
    elif len(_pool) < POOL_MAX:
        _pool.append(region)


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1
    _forked_away.extend(_pool)
    _pool.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
