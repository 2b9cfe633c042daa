"""The reranker package loads its names lazily: light entry points stay free of torch and grpc."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_cmd_serve_import_leaves_torch_and_grpc_unloaded() -> None:
    out = _run(
        "import sys, qdrant_sift.reranker._cmd_serve\n"
        "print('torch' in sys.modules, 'grpc' in sys.modules)"
    )
    assert out == "False False"


def test_package_import_is_lazy_and_names_still_resolve() -> None:
    out = _run(
        "import sys, qdrant_sift.reranker as r\n"
        "before = 'torch' in sys.modules\n"
        "from qdrant_sift.reranker import select, RemoteReranker, serve\n"
        "from qdrant_sift.reranker._select import select as s2\n"
        "from qdrant_sift.reranker._server import serve as v2\n"
        "print(before, select is s2, serve is v2, callable(RemoteReranker), 'torch' in sys.modules)"
    )
    assert out == "False True True True True"


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    import qdrant_sift.reranker as r

    for name in r.__all__:
        assert getattr(r, name) is not None, name
        assert name in dir(r)
    with pytest.raises(AttributeError, match="no_such_name"):
        r.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from qdrant_sift.reranker import no_such_name", {})
