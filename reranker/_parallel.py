"""Run the prompts of a CPU batch on a few threads at once.

Why threads: a CPU batch of per-prompt candidates at small K runs the single-prompt engine once
per prompt (:func:`._select._run_batch`), and each prompt needs its own Gram product and pick
loop; batching them saves only the Python wrapper, so one thread cannot go below ~0.75× the cost
of single calls. Both halves release the GIL (numpy's matmul; the compiled loop is
``nogil=True``), so prompts on different threads overlap on different cores.

Why this shape:

* the caller's thread is one of the workers; helpers come from one shared, lazily started pool,
  so a call with ``threads=1`` starts nothing, and a pool busy with other batches never blocks
  a call (the caller takes every prompt itself if no helper gets to run);
* prompts are taken in input order from one counter and each result goes to its own slot:
  results are in input order and the same as serial (each prompt is computed exactly as alone);
* helpers run in a copy of the caller's context, so the cancellation check
  (:func:`._cancel.current_check`) stops them too; after the first failure no worker takes a
  new prompt, and the failure of the lowest prompt index is raised (the one a serial run would
  have raised first: every lower prompt had been taken already);
* BLAS must stay single-threaded per worker: the caller enters
  :func:`._blas.single_thread_blas` once around the whole run (the cap is process-wide and owned
  by the main thread; see :mod:`._blas`).

``threads`` is an execution detail, not a selection option: it never changes what is picked, and
a remote reranker runs its batches on the server's threads. So it is a keyword of
``select_batch`` and ``LocalReranker`` (default: :func:`usable_cpus`), not a field of
:class:`~qdrant_sift.options.SelectOptions`.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from qdrant_sift import cpus
from qdrant_sift.errors import ConfigError

__all__ = ["MAX_HELPERS", "check_threads", "run_indexed", "usable_cpus"]

T = TypeVar("T")

MAX_HELPERS = 32  # helper threads in the shared pool, at most (a larger ``threads`` queues)

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_cpus: int | None = None


def usable_cpus() -> int:
    """CPUs this process may use (:func:`qdrant_sift.cpus.usable_cpus`), read once per process:
    the default ``threads`` of a CPU batch."""
    global _cpus
    if _cpus is None:
        _cpus = cpus.usable_cpus()
    return _cpus


def check_threads(threads: Any) -> int:
    """``threads`` of a batch call, checked: None → :func:`usable_cpus`; else an int ≥ 1
    (:class:`ConfigError` otherwise, before any work)."""
    if threads is None:
        return usable_cpus()
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise ConfigError(f"threads must be an int >= 1 or None, got {threads!r}")
    if threads < 1:
        raise ConfigError(
            f"threads must be >= 1 (None: the CPUs this process may use), got {threads}"
        )
    return int(threads)


def _helpers() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_HELPERS, thread_name_prefix="qdrant-sift-batch")
        return _pool


def _forget_pool() -> None:  # a forked child has none of the parent's pool threads
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_indexed(fn: Callable[[int], T], count: int, threads: int) -> list[T]:
    """``[fn(0), …, fn(count - 1)]``, computed on up to ``threads`` threads (the caller is one).

    ``fn`` must be safe to call from several threads at once for different indices.
    """
    workers = min(threads, count)
    if workers <= 1:
        return [fn(i) for i in range(count)]
    results: list[Any] = [None] * count
    errors: dict[int, BaseException] = {}
    failed = threading.Event()
    taken = itertools.count()  # next() is atomic: each index goes to exactly one worker

    def work() -> None:
        while not failed.is_set():
            i = next(taken)
            if i >= count:
                return
            try:
                results[i] = fn(i)
            except BaseException as exc:  # re-raised by the caller, typed as it was
                errors[i] = exc
                failed.set()
                return

    pool = _helpers()
    helpers: list[Future[None]] = [
        pool.submit(contextvars.copy_context().run, work) for _ in range(workers - 1)
    ]
    try:
        work()
    except BaseException:  # interrupted outside fn (KeyboardInterrupt): stop the helpers too
        failed.set()
        raise
    finally:
        for h in helpers:
            if not h.cancel():  # started: let it finish its prompt
                h.result()
    if errors:
        raise errors[min(errors)]
    return results
