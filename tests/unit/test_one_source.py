"""One source of truth per concept (issue 13): the n-clipping rule, the gain formula and the
array validator are each defined once and every entry point agrees with them; in-process
``select`` needs no protobuf code; no package imports another package's private modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qdrant_sift import errors
from qdrant_sift.arrays import CACHE_LINE, aligned_empty, as_float32_matrix
from qdrant_sift.client import rerank
from qdrant_sift.client._rerank import as_vectors
from qdrant_sift.client.stores._points import as_matrix, prepare_query
from qdrant_sift.options import DEFAULTS, STRATEGIES, SelectOptions
from qdrant_sift.reranker import relative_gains, select

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(3)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("unique", [False, True])
def test_clip_n_only_where_repeats_are_impossible(strategy: str, unique: bool) -> None:
    opts = SelectOptions(strategy=strategy, unique=unique)
    assert opts.repeats == (strategy == "sift" and not unique)
    assert opts.clip_n(3, 10) == 3
    assert opts.clip_n(12, 10) == (12 if opts.repeats else 10)
    assert DEFAULTS.repeats  # the default (SIFT, repeats allowed) never clips


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rerank_clips_like_the_rule_and_scores_with_the_gain_formula(strategy: str) -> None:
    q = RNG.standard_normal(8).astype(np.float32)
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    out = rerank(None, ["t"] * 5, 9, query_embedding=q, document_embeddings=list(x),
                 strategy=strategy, unique=False)  # fmt: skip
    assert len(out) == SelectOptions(strategy=strategy, unique=False).clip_n(9, 5)
    if strategy != "random":  # random draws differ between calls
        from qdrant_sift.options import RERANK_DEFAULTS  # rerank's λ, not select's

        sel = select(q, x, len(out), strategy=strategy, unique=False, lam=RERANK_DEFAULTS.lam)
        assert [r.index for r in out] == sel.indices.tolist()
    gains = relative_gains([r.uncertainty for r in out], 1.0)  # one cosine target: σ²₀ = 1
    assert [r.relevance_score for r in out] == gains
    assert all(g >= 0.0 for g in gains) and sum(gains) <= 1.0 + 1e-9


def test_relative_gains_is_selection_gains_over_the_prior() -> None:
    sel = select(RNG.standard_normal(6), RNG.standard_normal((30, 6)), 10)
    want = np.maximum(sel.gains / sel.prior_variance, 0.0)
    assert np.allclose(relative_gains(sel.variances, sel.prior_variance), want, atol=1e-12)
    assert relative_gains([0.5, 0.2], 0.0) == [0.0, 0.0]
    assert np.isnan(relative_gains([float("nan")], 1.0)[0])


BAD_ARRAYS = {
    "ragged": [[1.0, 2.0], [3.0]],
    "strings": [["a", "b"]],
    "bools": np.ones((2, 3), dtype=bool),
    "complex": np.ones((2, 3), dtype=complex),
    "3-D": np.ones((2, 2, 2)),
    "d = 0": np.ones((2, 0)),
    "NaN": [[1.0, float("nan")]],
    "inf": [[1.0, float("inf")]],
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_one_array_rule_for_stores_rerank_and_select(case: str) -> None:
    """The stores, ``rerank()``'s vectors and the selector refuse a bad array with one class."""
    bad = BAD_ARRAYS[case]
    with pytest.raises(errors.InvalidInputError) as rule:
        as_float32_matrix(bad, "x")
    seen = {type(rule.value)}
    for check in (
        lambda: as_matrix(bad, "x"),
        lambda: as_vectors(bad, "x"),
        lambda: prepare_query(bad, None),
        lambda: select(bad, np.ones((3, 2)), 1),
    ):
        with pytest.raises(errors.InvalidInputError) as exc:
            check()
        seen.add(type(exc.value))
    assert seen == {type(rule.value)}, case


def test_one_array_rule_shapes() -> None:
    assert as_float32_matrix([1, 2, 3], "x").shape == (1, 3)
    assert as_float32_matrix(np.zeros((0, 4)), "x", allow_empty=True).shape == (0, 4)
    with pytest.raises(errors.InvalidInputError):
        as_float32_matrix(np.zeros((0, 4)), "x")
    assert as_float32_matrix(np.zeros((0, 4)), "x", allow_vector=False).shape == (0, 4)
    with pytest.raises(errors.InvalidInputError):
        as_float32_matrix(np.zeros(4), "x", allow_vector=False)
    out = as_float32_matrix(np.ones((3, 2), dtype=np.float64)[:, ::-1], "x")
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_in_process_select_imports_no_protobuf_code() -> None:
    code = (
        "import sys, numpy as np\n"
        "from qdrant_sift.reranker import select, select_batch\n"
        "select(np.ones(4), np.eye(4), 2); select_batch([np.ones(4)], np.eye(4), 2)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('qdrant_sift.v1', 'google.protobuf',"
        " 'grpc'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


#: Where each package's code lives, and its import path.
PACKAGES = {
    "client": "qdrant_sift.client",
    "reranker": "qdrant_sift.reranker",
    "finetune": "qdrant_sift.finetune",
    "evaluation": "qdrant_sift.eval",
}
#: Scripts that belong to no package (docs/eval/scripts, deploy): they use public names only.
SCRIPT_FOLDERS = ("docs", "deploy")


def test_no_private_imports_across_packages() -> None:
    found = set()
    pattern = re.compile(r"^\s*(?:from|import)\s+(qdrant_sift\.(\w+)(?:\.\w+)*)", re.M)
    for folder, own in [*PACKAGES.items(), *((f, "") for f in SCRIPT_FOLDERS)]:  # "": no own
        for path in sorted((REPO / folder).rglob("*.py")):
            if "proto" in path.parts:
                continue
            for match in pattern.finditer(path.read_text(encoding="utf-8")):
                module = match.group(1)
                if module.startswith(own + ".") or module == own:
                    continue
                if match.group(2).startswith("_"):  # the root package's shared helpers
                    continue
                if any(part.startswith("_") for part in module.split(".")[1:]):
                    found.add((str(path.relative_to(REPO)), module))
    assert not found, sorted(found)


def test_local_and_remote_rerankers_satisfy_the_reranker_protocol() -> None:
    from qdrant_sift.reranker import LocalReranker, RemoteReranker, Reranker

    assert isinstance(LocalReranker(device="cpu"), Reranker)
    remote = RemoteReranker("localhost:1")  # connects lazily
    try:
        assert isinstance(remote, Reranker)
    finally:
        remote.close()


OPTION_NAMES = ("strategy", "lam", "alpha", "unique", "diversity", "seed", "normalize")


def _signature_defaults(fn: object) -> dict[str, object]:
    import inspect

    params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    return {name: params[name].default for name in OPTION_NAMES if name in params}


def _want(opts: SelectOptions, got: dict[str, object]) -> dict[str, object]:
    return {name: getattr(opts, name) for name in got}


def test_every_entry_point_takes_its_defaults_from_select_options() -> None:
    """A default changed in SelectOptions reaches in-process, remote, client and wire alike."""
    from qdrant_sift.client import SiftClient
    from qdrant_sift.options import RERANK_DEFAULTS
    from qdrant_sift.reranker import RemoteReranker, select_batch
    from qdrant_sift.reranker._matrix import options_from_proto
    from qdrant_sift.v1 import reranker_pb2 as pb

    entry_points = (select, select_batch, RemoteReranker.select, RemoteReranker.select_batch)
    for fn in (
        *entry_points,
        RemoteReranker.search,
        SiftClient.search,
        SiftClient.adapt_and_generate,
    ):
        got = _signature_defaults(fn)
        assert got and got == _want(DEFAULTS, got), fn
    assert _signature_defaults(rerank) == _want(RERANK_DEFAULTS, _signature_defaults(rerank))
    assert SelectOptions(unique=True, lam=0.1) == RERANK_DEFAULTS
    for request in (pb.SelectRequest(), pb.RecallRequest()):
        wire = options_from_proto(request)
        assert wire == {name: getattr(DEFAULTS, name) for name in wire}


def test_cli_selection_flags_default_to_select_options() -> None:
    import argparse

    from qdrant_sift.client._cmd_common import add_selection_options

    parser = argparse.ArgumentParser()
    add_selection_options(parser, n_default=5)
    args = parser.parse_args([])
    assert (args.strategy, args.lam, args.alpha) == (DEFAULTS.strategy, DEFAULTS.lam, None)
    text = " ".join(parser.format_help().split())
    assert all(
        " ".join(SelectOptions.help(f).split()) in text for f in ("lam", "alpha", "strategy")
    )


@pytest.mark.parametrize("shape", [(0, 4), (1,), (3, 5), (200, 384)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8])
def test_aligned_empty_starts_on_a_cache_line(shape: tuple[int, ...], dtype: Any) -> None:
    """The store's gathers and the selector's copies share one alignment rule."""
    for _ in range(4):  # the allocator's own start varies from call to call
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.flags.writeable and (a.size == 0 or a.ctypes.data % CACHE_LINE == 0)


@pytest.mark.parametrize(
    "package",
    [
        "qdrant_sift.client",
        "qdrant_sift.client.stores",
        "qdrant_sift.reranker",
        "qdrant_sift.finetune",
        "qdrant_sift.eval",
    ],
)
def test_package_names_are_in_their_private_modules_all(package: str) -> None:
    """A name a package exports is also in the ``__all__`` of the private module defining it,
    so each module's ``__all__`` says what it offers the rest of the package."""
    import importlib

    pkg = importlib.import_module(package)
    missing = []
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        where = getattr(obj, "__module__", None)
        if not isinstance(where, str) or not where.startswith(package + "._"):
            continue  # a constant, or defined outside this package's private modules
        module = sys.modules[where]
        if getattr(obj, "__name__", name) not in getattr(module, "__all__", ()):
            missing.append(f"{where}.{name}")
    assert not missing, missing
