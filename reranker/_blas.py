"""Run small BLAS calls single-threaded.

A K=200 Gram product takes a fraction of a millisecond on one core; waking BLAS worker threads
for it costs more than it saves, and on a busy machine (other processes on the same cores) the
threaded call can be 10-50× slower. :func:`single_thread_blas` caps numpy's BLAS at one thread
for the duration of a small selection and restores the previous setting afterwards (about 2 µs).
It uses ``threadpoolctl`` when installed and is a no-op otherwise. The cap is process-wide, so
BLAS calls of other threads during those microseconds also run on one thread.
"""

from __future__ import annotations

from typing import Any

__all__ = ["single_thread_blas"]

_controllers: list[Any] | None = None


def _blas_controllers() -> list[Any]:
    global _controllers
    if _controllers is None:
        try:
            import threadpoolctl

            ctl = threadpoolctl.ThreadpoolController()
            _controllers = [lc for lc in ctl.lib_controllers if lc.user_api == "blas"]
        except Exception:  # missing or unusable threadpoolctl: keep BLAS as configured
            _controllers = []
    return _controllers


class single_thread_blas:
    """Context manager: numpy's BLAS libraries run on one thread inside the block."""

    __slots__ = ("_saved",)

    def __init__(self) -> None:
        self._saved: list[tuple[Any, int]] = []

    def __enter__(self) -> None:
        for lc in _blas_controllers():
            prev = lc.get_num_threads()
            if prev is not None and prev != 1:
                lc.set_num_threads(1)
                self._saved.append((lc, prev))

    def __exit__(self, *exc: object) -> None:
        for lc, prev in self._saved:
            lc.set_num_threads(prev)
        self._saved.clear()
