"""How many threads torch uses, and how idle OpenMP threads wait: chosen once, deliberately.

The production case is a shared machine. PyTorch's CPU wheels run their kernels on GNU OpenMP,
whose idle threads *spin* (about 300,000 iterations) at every barrier before sleeping. On cores
that another process also uses, a spinning thread burns the time slice its partner needs to
reach the barrier, and a decode step crosses a barrier a few hundred times per token: the
probe in issue 12 saw 8 new tokens take 16–54 s instead of ~3 s beside one other 2-thread job.
So, before torch is first imported:

* ``OMP_WAIT_POLICY=PASSIVE`` (``os.environ.setdefault``: a value you set wins): idle threads
  sleep at once. The cost on an idle machine is one futex wake per parallel region, a few
  microseconds against milliseconds of work per region for a 135M model.
* threads: at most the CPUs this process may actually use, its affinity mask capped by a cgroup
  CPU quota (a container limited to 2 CPUs on a 64-core host gets 2 threads, not 64); a lower
  count already set is kept. ``QDRANT_SIFT_TORCH_THREADS`` (else ``OMP_NUM_THREADS``) sets it.

Set ``OMP_WAIT_POLICY=ACTIVE`` for a machine dedicated to one job, where spinning is a few
percent faster. ``bench/bench_contention.py`` measures seconds per new token idle and beside a
competing CPU job, per policy.
"""

from __future__ import annotations

import os
import sys
import threading

from qdrant_sift.cpus import usable_cpus

__all__ = ["apply_thread_policy", "usable_cpus"]

_lock = threading.Lock()
_applied: int | None = None


def _requested() -> int | None:
    for var in ("QDRANT_SIFT_TORCH_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                value = int(raw)
            except ValueError:
                continue
            if value >= 1:
                return value
    return None


def apply_thread_policy(threads: int | None = None) -> int:
    """Apply the policy above (once per process; again when ``threads`` is given).

    Returns the torch thread count now in effect. The wait policy only takes effect when this
    runs before torch is imported; the thread count always does.
    """
    global _applied
    with _lock:
        if threads is None and _applied is not None:
            return _applied
        if "torch" not in sys.modules:
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        n = threads if threads is not None else _requested()
        if n is None:  # never raise a count someone chose; cap torch's default at what's usable
            n = min(torch.get_num_threads(), usable_cpus())
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _applied = n
        return n
