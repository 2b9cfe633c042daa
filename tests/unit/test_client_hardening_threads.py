"""Issue 12 item 6: the torch thread count and the OpenMP wait policy are chosen deliberately
(see ``client/_threads.py``): idle OpenMP threads sleep instead of spinning (``PASSIVE``, unless
the user set a policy), and torch never runs more threads than the CPUs the process may use.

Each case runs in a fresh interpreter: the wait policy only counts before torch is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from qdrant_sift.client import _threads

_PROBE = textwrap.dedent(
    """
    import json, os, sys
    from qdrant_sift.client import SiftClient
    from qdrant_sift.client.stores import QdrantStore
    assert "torch" not in sys.modules
    client = SiftClient(store=QdrantStore("c", location=":memory:"), embedder=object())
    client.reranker  # the first torch part builds: the policy applies before torch loads
    import torch
    torch.ones(256, 256) @ torch.ones(256, 256)  # start the OpenMP team
    print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"),
                      "threads": torch.get_num_threads()}))
    """
)


def _probe(env: dict[str, str], cpus: int | None = None) -> tuple[dict[str, Any], str]:
    ours = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "QDRANT_SIFT_TORCH_THREADS")
    base = {k: v for k, v in os.environ.items() if k not in ours}
    base.update(env, OMP_DISPLAY_ENV="TRUE")

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))

    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=base, timeout=300,
        preexec_fn=pin, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_default_is_passive_and_the_openmp_runtime_sees_it() -> None:
    out, stderr = _probe({})
    assert out["policy"] == "PASSIVE"
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in stderr  # libgomp's own report of its settings
    assert 1 <= out["threads"] <= _threads.usable_cpus()


def test_a_policy_the_user_set_wins() -> None:
    out, stderr = _probe({"OMP_WAIT_POLICY": "ACTIVE"})
    assert out["policy"] == "ACTIVE" and "OMP_WAIT_POLICY = 'ACTIVE'" in stderr


def test_thread_count_override_and_affinity() -> None:
    assert _probe({"QDRANT_SIFT_TORCH_THREADS": "1"})[0]["threads"] == 1
    assert _probe({}, cpus=1)[0]["threads"] == 1


def test_cgroup_quota_caps_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_sift import cpus

    assert _threads.usable_cpus is cpus.usable_cpus  # one rule for torch and SIFT batches
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: 0.5)
    assert _threads.usable_cpus() == 1
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    assert _threads.usable_cpus() == len(os.sched_getaffinity(0))
