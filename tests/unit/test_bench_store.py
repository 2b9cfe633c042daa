"""bench/bench_store.py runs end to end on a tiny collection and names a baseline on every row.

FAISS is a benchmark-only dependency (the ``bench`` extra): without it the FAISS row must say
it was skipped and why, and everything else must still run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *extra: str) -> tuple[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QDRANT_SIFT_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, str(ROOT / "bench" / "bench_store.py"), "--quick", "--sizes", "3000",
           "--queries", "3", "--reps", "1", "--cache", str(tmp_path / "cache"), *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, out.stderr


def _tables(stdout: str) -> list[list[list[str]]]:
    """Every markdown table in the output, header row dropped."""
    tables: list[list[list[str]]] = []
    inside = False
    for ln in stdout.splitlines():
        if not ln.startswith("|"):
            inside = False
            continue
        if not inside:
            tables.append([])
            inside = True
            continue  # the header
        if "---" not in ln:
            tables[-1].append([c.strip() for c in ln.strip("|").split("|")])
    return tables


def _table(stdout: str) -> list[list[str]]:
    return _tables(stdout)[0]


@pytest.mark.timeout(900)
def test_every_row_has_a_baseline_from_the_same_run(tmp_path: Path) -> None:
    stdout, _ = _run(tmp_path, "--local-max", "3000")
    rows = _table(stdout)
    assert "load average" in stdout
    what = [r[1] for r in rows]
    for needed in ("plain top-50, Qdrant Edge query as a user runs it", "plain top-50, our store",
                   "SIFT search, Edge HNSW", "plain top-50, our store, exact",
                   "SIFT search, Edge exact", "plain top-50, local mode", "SIFT search, local mode",
                   "select alone", "(store default)", "K scaling", "SIFT search, vector cache off",
                   "plain top-50, vector cache off", "SIFT search, one direction",
                   "payloads of all 200 candidates read", "floor of a SIFT search",
                   "payloads of the picks alone", "steady state: a fresh query every call",
                   "SIFT search (as below)", "inside them: select N=50",
                   "steady-state floor", "without the picks' payloads"):  # fmt: skip
        assert any(needed in w for w in what), (needed, what)
    for r in rows:
        size, _, median, base, ratio, _note = r
        assert size == "3k"
        if median != "-":  # a timed row: its own baseline row, or a ratio against one
            assert ratio.endswith("×"), r
            assert base == "-" or any(base in w for w in what), r
    faiss = [r for r in rows if "FAISS" in r[1]]
    if importlib.util.find_spec("faiss") is None:
        assert len(faiss) == 1 and faiss[0][5].startswith("skipped: faiss not importable")
    else:
        assert any("IndexFlatIP" in r[1] for r in faiss) and any("HNSW" in r[1] for r in faiss)
    # the scaling tables: by collection size (with local mode here), then by K
    _, by_size, by_k = _tables(stdout)
    assert [r[0] for r in by_size] == ["3k"] and all(r[4].endswith("×") for r in by_size)
    size_row = by_size[0]
    assert len(size_row) == 29 and "-" not in size_row[1:7]  # the steady state, timed
    assert size_row[6].endswith("×")  # the steady-state floor's ratio
    assert size_row[11].endswith("×")  # ratio to the Edge query
    assert size_row[13].endswith("×") and size_row[15].endswith("×")  # all payloads, one direction
    assert size_row[18] != "-" and size_row[19].endswith("×")  # the floor and its ratio
    assert size_row[22].endswith("×")  # vector cache off
    assert size_row[26] != "-" and size_row[28].endswith("×")  # local mode timed
    assert "data: clustered (symmetric" in stdout
    assert [r[0] for r in by_k] == ["50", "200", "1,000"] and all(r[4].endswith("×") for r in by_k)
    script = str(ROOT / "bench" / "bench_store.py")
    helptext = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    ).stdout
    assert "idle-machine run" in helptext and "--sizes 10k,100k,1m" in helptext
    assert "ids: ints 0..n-1" in stdout
    # the collection is cached: a second run rebuilds nothing
    again, log = _run(tmp_path, "--local-max", "0", "--no-faiss")
    assert "Edge ingest" not in log and "generating" not in log
    assert "skipped (--no-faiss)" in again and "skipped above --local-max 0" in again


@pytest.mark.timeout(900)
def test_cone_data_is_its_own_collection_and_named(tmp_path: Path) -> None:
    """``--data cone`` builds a collection of its own (the clustered cache stays valid) and the
    table says which data it timed."""
    stdout, log = _run(tmp_path, "--data", "cone", "--sections", "edge", "--no-faiss")
    assert "data: cone (clusters plus a shared mean direction" in stdout
    assert "(cone)" in log and (tmp_path / "cache" / "cone-3000x384-s0-v1" / "edge.ready").exists()
    assert not (tmp_path / "cache" / "clustered-3000x384-s0-v1").exists()
    rows = _table(stdout)
    assert any("SIFT search, one direction" in r[1] and r[4].endswith("×") for r in rows)


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_store_gen", ROOT / "bench" / "bench_store.py"
    )
    assert spec is not None and spec.loader is not None
    argv = sys.argv
    sys.argv = ["bench_store.py", "--threads", "0"]  # no thread variables set in this process
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.argv = argv
    return mod


def _best_cosine(q: np.ndarray, centres: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    cn = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return np.asarray((qn @ cn.T).max(axis=1))


def test_steady_state_queries_are_fresh_and_like_the_data() -> None:
    """The steady-state rows' queries: none repeats or is one of the dataset's own 64, and each
    sits by one of the data's centres as those do (so they time the same kind of search)."""
    mod = _bench_module()
    for data in ("clustered", "cone"):
        ds = SimpleNamespace(n=5000, d=64, seed=0, data=data)
        fresh = np.stack(mod.fresh_queries(ds, 300))
        _, own = mod.clustered(5000, 64, 0, cone=data == "cone")
        _, centres = mod.cluster_centres(5000, 64, 0, cone=data == "cone")
        assert len({row.tobytes() for row in fresh}) == 300
        assert not {row.tobytes() for row in fresh} & {row.tobytes() for row in own}

        near = _best_cosine(fresh, centres)
        assert abs(float(np.median(near)) - float(np.median(_best_cosine(own, centres)))) < 0.05
        assert float(near.min()) > 0.6


def test_cone_data_sits_in_a_cone() -> None:
    """The cone generator's geometry is what its name says: unrelated cosines mostly positive,
    −q's best hit far below q's 200th (so −q adds nothing to a both-directions recall); the
    clustered data stays symmetric."""
    mod = _bench_module()
    for cone in (False, True):
        x, q = mod.clustered(5000, 64, 0, cone=cone)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q[:8] / np.linalg.norm(q[:8], axis=1, keepdims=True)
        s = qn @ xn.T
        positive = float((s > 0).mean())
        if cone:
            assert positive > 0.95
            assert float((-s).max()) < float(np.sort(s, axis=1)[:, -200].min())
        else:
            assert 0.4 < positive < 0.6


@pytest.mark.timeout(900)
def test_uuid_point_ids_get_their_own_shard_and_the_same_rows(tmp_path: Path) -> None:
    stdout, log = _run(tmp_path, "--ids", "uuid", "--sections", "edge,ef", "--no-faiss")
    assert "ids: UUID strings" in stdout and "Edge ingest" in log
    rows = _table(stdout)
    what = [r[1] for r in rows]
    for needed in ("SIFT search, Edge HNSW", "plain top-50, our store", "(store default)"):
        assert any(needed in w for w in what), (needed, what)
    recall = [r[5] for r in rows if "(store default)" in r[1]]
    assert recall and recall[0].startswith(("recall@200 0.9", "recall@200 1.0")), recall
    shards = sorted(p.name for p in (tmp_path / "cache").glob("*/edge*") if p.is_dir())
    assert shards == ["edge-uuid"], shards
