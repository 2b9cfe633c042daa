"""A server compiles every route of the compiled pick loop before it serves (reranker/_warm.py).

A compile inside a live call cannot be cancelled: a SIGTERM during one waited for it (3.7 s
after SIGTERM with ``--grace 1``). So after :func:`warm_routes`, the calls a service makes, with
inputs as the wire decodes them (read-only) and as embedders and stores hand them over
(writable), must find every specialisation already there. Checked in a fresh process: in this
one, earlier tests have compiled everything already, and the check could not fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qdrant_sift.reranker._sift_compiled import compiled_available

_PROBE = r"""
import json
import numpy as np
from qdrant_sift.reranker import LocalReranker
from qdrant_sift.reranker import _sift_compiled as loop, _sift_once as once
from qdrant_sift.reranker._matrix import from_matrix, to_matrix
from qdrant_sift.reranker._warm import warm_routes

def compiled():
    got = set()
    for mod, names in ((loop, ("_steps", "_table", "_kernel_dims", "_dots")),
                       (once, ("_select", "_sqnorms"))):
        for name in names:
            got |= {f"{name}{sig}" for sig in getattr(getattr(mod, name), "signatures", [])}
    return got

sel = LocalReranker(device="cpu", threads=2)
if WARM:
    warm_routes(sel)
before = compiled()
rng = np.random.default_rng(1)
X = rng.standard_normal((300, 16)).astype(np.float32)
Q = X[:3] + 0.1
limits = {"max_rows": ("rows", 10**6), "max_cols": ("cols", 10**4)}
for make in (lambda a: a, lambda a: from_matrix(to_matrix(a), "a", **limits)):
    x, q, qs = make(X), make(Q[:1]), make(Q)
    for n in (5, 100, 200, 1000):
        sel.select(q, x, n)
        sel.select(q, x, min(n, 300), unique=True, alpha=0.5)
    sel.select(qs, x, 20)
    sel.select(qs, x, 20, normalize=False)
    sel.select(qs, x, 200, normalize=False)
    sel.select_batch([q, qs, q], [x, x[:50], x], 20)
    sel.select_batch([q, q], x, 200)
    sel.select_batch([q, q], x, 5)
    for strategy in ("nearest", "mmr", "random"):
        sel.select(q, x, 20, strategy=strategy)
        sel.select_batch([q, q], [x, x], 20, strategy=strategy)
print(json.dumps({"warm": len(before), "new": sorted(compiled() - before)}))
"""


def _probe(warm: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", f"WARM = {warm}\n{_PROBE}"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


@pytest.mark.skipif(not compiled_available(), reason="numba is not importable here")
def test_after_warm_routes_no_service_call_compiles() -> None:
    cold = _probe(warm=False)
    assert cold["new"], "the probe's calls reach no compiled route: it could not fail"
    warm = _probe(warm=True)
    assert warm["new"] == [], f"compiled inside a call after warm_routes: {warm['new']}"


def test_the_server_warms_its_own_selector_when_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qdrant_sift.reranker import _server

    seen: list[object] = []
    monkeypatch.setattr(_server, "warm_routes", seen.append)
    handle = _server.build_server(port=0, device="cpu", max_workers=1)
    try:
        assert seen == []  # building serves nothing and compiles nothing
        handle.start()
        assert seen == [handle.servicer._selector]
    finally:
        handle.stop(0)
