"""Issue 12 item 1: a collection name can never escape its store root.

Before: ``qdrant-sift ingest f.txt --collection .. --recreate --path X/edge`` ran ``rmtree`` on
``X/``; ``SiftClient`` and ``QdrantStore`` took any name; a 300-character name failed with
``OSError``. Now one validator (Qdrant's rules) guards every backend and entry point, and the
Edge folder is resolved and refused when it is not directly inside the store root.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qdrant_sift.client import SiftClient, cli
from qdrant_sift.client.cli import main
from qdrant_sift.client.stores import (
    EdgeStore,
    QdrantStore,
    open_store,
    shard_path,
    validate_collection_name,
)
from qdrant_sift.errors import InvalidInputError

GOOD = ["docs", "a", "docs-v2_ünïcode", "with space", "x" * 255, "a.b", "..a"]
BAD = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "a\\b",
    "/abs",
    "a\x00b",
    "tab\there",
    "new\nline",
    "x" * 256,
    "x" * 300,
    *list('<>:"|?*'),
]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names_pass(name: str) -> None:
    assert validate_collection_name(name) == name


@pytest.mark.parametrize("name", [*BAD, None, 3, b"docs"])
def test_invalid_names_raise_one_typed_error(name: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_collection_name(name)


@pytest.mark.parametrize("name", BAD)
def test_every_backend_refuses_the_same_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        EdgeStore(tmp_path / "edge", name)
    with pytest.raises(InvalidInputError):
        QdrantStore(name, location=":memory:")
    with pytest.raises(InvalidInputError):
        open_store("edge", name, path=tmp_path / "edge2")
    with pytest.raises(InvalidInputError):
        SiftClient(collection=name, path=tmp_path / "edge3")
    assert not (tmp_path / "edge").exists() or not any((tmp_path / "edge").iterdir())


def test_dotted_and_overlong_names_are_refused_for_the_edge_folder(tmp_path: Path) -> None:
    # ".docs.lock" would be the lock file of "docs"; 250 bytes leave no room for the lock name.
    for name in (".docs.lock", ".hidden", "é" * 200):
        with pytest.raises(InvalidInputError):
            shard_path(tmp_path, name)
        with pytest.raises(InvalidInputError):
            EdgeStore(tmp_path / "edge", name)


def test_a_symlink_in_the_root_cannot_redirect_a_collection(tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    root = tmp_path / "edge"
    root.mkdir()
    (root / "docs").symlink_to(outside)
    with pytest.raises(InvalidInputError, match="outside the store root"):
        EdgeStore(root, "docs")
    assert (outside / "keep.txt").read_text() == "mine"


def test_drop_deletes_only_the_shard_folder(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    (tmp_path / "sibling.txt").write_text("keep")
    with EdgeStore(root, "docs") as store:
        store.create(4)
        assert store.shard_dir == (root / "docs").resolve()
        store.drop()
        assert not store.exists() and not (root / "docs").exists()
    assert (tmp_path / "sibling.txt").read_text() == "keep" and root.is_dir()


@pytest.fixture(autouse=True)
def _client_commands_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse with the client's own subcommands (the others import torch and are not tested)."""
    client_cmds = tuple(m for m in cli.COMMAND_MODULES if m.startswith("qdrant_sift.client."))
    monkeypatch.setattr(cli, "COMMAND_MODULES", client_cmds)


def _ingest_argv(tmp_path: Path, collection: str) -> list[str]:
    f = tmp_path / "f.txt"
    f.write_text("hello world")
    return [
        "ingest",
        str(f),
        "--collection",
        collection,
        "--recreate",
        "--no-progress",
        "--path",
        str(tmp_path / "X" / "edge"),
        "--tokenizer",
        "regex",
    ]


@pytest.mark.parametrize("collection", ["..", ".", "../X", "a/b", "x" * 300])
def test_cli_ingest_recreate_cannot_delete_the_parent(
    tmp_path: Path, collection: str, capsys: pytest.CaptureFixture[str]
) -> None:
    x = tmp_path / "X"
    (x / "edge").mkdir(parents=True)
    (x / "precious.txt").write_text("keep")
    with pytest.raises(SystemExit) as info:
        main(_ingest_argv(tmp_path, collection))
    assert info.value.code == 2
    assert "--collection" in capsys.readouterr().err
    assert (x / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in x.iterdir()) == ["edge", "precious.txt"]
    assert list((x / "edge").iterdir()) == []


@pytest.mark.parametrize("command", ["search", "generate"])
def test_cli_search_and_generate_refuse_bad_names(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "prompt", "--collection", "..", "--path", str(tmp_path / "edge")])
    assert info.value.code == 2
    assert "collection name" in capsys.readouterr().err
    assert not (tmp_path / "edge").exists()
