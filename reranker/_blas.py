"""Run small BLAS calls single-threaded.

A K=200 Gram product takes a fraction of a millisecond on one core; waking BLAS worker threads
for it costs more than it saves, and on a busy machine (other processes on the same cores) the
threaded call can be 10-50× slower. :func:`single_thread_blas` caps numpy's BLAS at one thread
for the duration of a small selection and restores the previous setting afterwards (about 2 µs).
It uses ``threadpoolctl`` when installed and is a no-op otherwise. The cap is process-wide, so
BLAS calls of other threads during those microseconds also run on one thread (OpenBLAS ignores a
cap requested from a non-main thread: there it is a harmless no-op).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["single_thread_blas"]

_controllers: list[Any] | None = None
_lock = threading.Lock()
_active = 0  # threads currently inside a single_thread_blas block
_saved: list[tuple[Any, int]] = []  # (library, thread count to restore)


def _blas_controllers() -> list[Any]:
    global _controllers
    if _controllers is None:  # first use; called under _lock
        try:
            import threadpoolctl

            ctl = threadpoolctl.ThreadpoolController()
            _controllers = [lc for lc in ctl.lib_controllers if lc.user_api == "blas"]
        except Exception:  # missing or unusable threadpoolctl: keep BLAS as configured
            _controllers = []
    return _controllers


class single_thread_blas:
    """Context manager: numpy's BLAS libraries run on one thread inside the block.

    Re-entrant and thread-safe: the first thread in caps the libraries, the last one out
    restores them, so concurrent selections (a server's worker threads) never thrash the
    setting or leave it capped.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        global _active
        with _lock:
            _active += 1
            if _active == 1:
                for lc in _blas_controllers():
                    prev = lc.get_num_threads()
                    if prev is not None and prev != 1:
                        lc.set_num_threads(1)
                        _saved.append((lc, prev))

    def __exit__(self, *exc: object) -> None:
        global _active
        with _lock:
            _active -= 1
            if _active == 0:
                for lc, prev in _saved:
                    lc.set_num_threads(prev)
                _saved.clear()
