"""Run small BLAS calls single-threaded.

A K=200 Gram product takes a fraction of a millisecond on one core; waking BLAS worker threads
for it costs more than it saves, and on a busy machine (other processes on the same cores) the
threaded call is several times slower. :func:`single_thread_blas` caps numpy's BLAS at one
thread for the duration of a small selection and restores the setting afterwards (about 2 µs).
It uses ``threadpoolctl`` when installed and is a no-op otherwise.

Measured on a loaded 2-core machine (K=200, d=384, n=50; medians of 320 selections, capped and
uncapped interleaved in one process): 1.3-1.6 ms capped, 9.3-9.5 ms uncapped.

**Scope.** The cap cannot be scoped to the calling thread: numpy's OpenBLAS (pthreads build)
keeps one process-wide thread count (``openblas_set_num_threads_local`` writes a plain global
that only OpenMP builds read), and it ignores ``openblas_set_num_threads`` from any thread but
the main one (a worker's "cap" measured 9.4 ms, the same as none). So the cap is owned by the
main thread:

* only the main thread sets and restores it, around its own small selections; in other threads
  (a server's workers) the block is a no-op. A worker that ended the last block used to "restore"
  the setting there, which OpenBLAS ignored, leaving the process capped for good;
* other threads' numpy BLAS calls share the cap during those milliseconds. That is no loss on
  the machine above: a K=20,000 selection alone took 245-311 ms on one BLAS thread and 532-596 ms
  on two, and in a worker beside main-thread small selections 504-571 ms with the cap against
  1,648-1,778 ms when large selections lifted it;
* torch is not touched: its CPU kernels use MKL/oneDNN over OpenMP, not the capped library.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["capped", "single_thread_blas"]

_MAIN = threading.main_thread()
_controllers: list[Any] | None = None
_lock = threading.Lock()
_active = 0  # the main thread's open single_thread_blas blocks
_saved: list[tuple[Any, int]] = []  # (library, thread count to restore) while capped


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


def capped() -> bool:
    """Whether the cap is set now (for tests and diagnostics)."""
    with _lock:
        return bool(_saved)


class single_thread_blas:
    """Context manager: in the main thread, numpy's BLAS runs on one thread inside the block;
    in any other thread a no-op (see the module docstring).

    Re-entrant: the first block in sets the cap, the last one out restores the setting.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        global _active
        if threading.current_thread() is not _MAIN:
            return
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
        if threading.current_thread() is not _MAIN:
            return
        with _lock:
            _active -= 1
            if _active == 0:
                for lc, prev in _saved:
                    lc.set_num_threads(prev)
                _saved.clear()
