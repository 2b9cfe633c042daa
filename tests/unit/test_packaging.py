"""The built wheel, not just the editable checkout, must import and map every folder correctly."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (path,) = out.glob("qdrant_sift-*.whl")
    return path


def test_wheel_lays_out_the_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "qdrant_sift/__init__.py",
        "qdrant_sift/errors.py",
        "qdrant_sift/client/__init__.py",
        "qdrant_sift/client/cli.py",
        "qdrant_sift/reranker/__init__.py",
        "qdrant_sift/finetune/__init__.py",
        "qdrant_sift/py.typed",
    ):
        assert expected in names, expected
    # Never install bare top-level modules that would shadow other projects.
    tops = {n.split("/", 1)[0] for n in names if not n.endswith(".dist-info/") and "/" in n}
    assert tops <= {"qdrant_sift", next(n for n in tops if n.endswith(".dist-info"))}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "qdrant-sift = qdrant_sift.client.cli:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_wheel_imports_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Unpack the wheel into a fresh venv whose only other path is our dependencies."""
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    deps = sysconfig.get_paths()["purelib"]  # directories listed in a .pth run no further .pth
    site = next((env_dir / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(f"{target}\n{deps}\n")
    code = (
        "import sys, qdrant_sift, qdrant_sift.client, qdrant_sift.client.cli;"
        "assert 'torch' not in sys.modules, 'client must not import torch';"
        f"assert qdrant_sift.__file__.startswith({str(target)!r}), qdrant_sift.__file__;"
        "import qdrant_sift.reranker, qdrant_sift.finetune;"
        "print(qdrant_sift.__version__)"
    )
    result = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __import__("qdrant_sift").__version__


def test_client_import_does_not_pull_torch() -> None:
    code = (
        "import sys, qdrant_sift.client, qdrant_sift.client.cli as cli, qdrant_sift.finetune;"
        "cli.build_parser();"  # imports every subcommand module: --help must stay instant
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
