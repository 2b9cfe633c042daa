"""Issue 12 item 5, fault injection on the file system: ingest skips and reports every entry it
cannot read as a regular text file, and ingests the rest.

Before: a symlink loop aborted the whole run (``RuntimeError: Symlink loop``), a FIFO named
``*.txt`` hung it forever, a file of NUL bytes was ingested as text, and a dangling link was
reported under its target's path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest_stores import HashEmbedder

from qdrant_sift.client.ingest import IngestReport, ingest, iter_files
from qdrant_sift.client.stores import QdrantStore

KW: dict[str, Any] = dict(tokenizer="regex", chunk_tokens=10, overlap=2, batch_size=4)


def _run_with_deadline(fifos: list[Path], fn: Any, seconds: float = 30.0) -> Any:
    """Run ``fn`` in a thread; if it blocks on a FIFO, unblock it and fail instead of hanging."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:  # give the blocked open() a writer, then EOF
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"ingest blocked for {seconds} s on a FIFO")
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A folder with one good file and one of each bad kind of entry."""
    root = tmp_path / "corpus"
    root.mkdir()
    good = root / "good.txt"
    good.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")
    fifo = root / "pipe.txt"
    os.mkfifo(fifo)
    loop_a, loop_b = root / "loop_a.txt", root / "loop_b.txt"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    self_loop = root / "self.md"
    self_loop.symlink_to(self_loop)
    dangling = root / "dangling.txt"
    dangling.symlink_to(tmp_path / "gone" / "target.txt")
    nul = root / "zeros.txt"
    nul.write_bytes(b"\x00" * 4096)
    mixed = root / "mixed.md"
    mixed.write_bytes(b"looks like text\x00\x00 but is not")
    sock_path = root / "sock.txt"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    sock.close()
    dir_link = root / "linked_dir"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("not followed")
    dir_link.symlink_to(tmp_path / "elsewhere")
    return {
        "root": root,
        "good": good,
        "fifo": fifo,
        "loop_a": loop_a,
        "loop_b": loop_b,
        "self_loop": self_loop,
        "dangling": dangling,
        "nul": nul,
        "mixed": mixed,
        "sock": sock_path,
        "dir_link": dir_link,
    }


def test_folder_with_every_bad_entry_ingests_the_good_file(tree: dict[str, Path]) -> None:
    with QdrantStore("c", location=":memory:") as store:
        report: IngestReport = _run_with_deadline(
            [tree["fifo"]],
            lambda: ingest(tree["root"], store, HashEmbedder(), progress=False, **KW),
        )
        assert report.files_read == 1 and store.count() == report.upserted > 0
        sources = {p.payload["source"] for p in store.scroll()}
    assert sources == {"good.txt"}  # relative to the folder ingested (issue 14)
    reasons = dict(report.skipped)
    assert reasons[str(tree["fifo"])] == "not a regular file (FIFO)"
    assert reasons[str(tree["sock"])] == "not a regular file (socket)"
    assert reasons[str(tree["loop_a"])] == "symlink loop"
    assert reasons[str(tree["loop_b"])] == "symlink loop"
    assert reasons[str(tree["self_loop"])] == "symlink loop"
    # reported under the link's own path, naming where it points
    assert reasons[str(tree["dangling"])].startswith("dangling symlink (to ")
    assert str(tree["dangling"].parent.parent / "gone") in reasons[str(tree["dangling"])]
    assert reasons[str(tree["nul"].resolve())] == "binary (contains NUL bytes)"
    assert reasons[str(tree["mixed"].resolve())] == "binary (contains NUL bytes)"
    assert reasons[str(tree["dir_link"])] == "symlink to a folder (not followed)"
    assert len(report.skipped) == 9, report.skipped


@pytest.mark.parametrize("name", ["fifo", "loop_a", "self_loop", "dangling", "sock"])
def test_bad_entry_named_directly_is_reported_not_fatal(tree: dict[str, Path], name: str) -> None:
    report = IngestReport()
    files = _run_with_deadline(
        [tree["fifo"]], lambda: iter_files([tree[name], tree["good"]], report)
    )
    assert files == [tree["good"].resolve()]
    assert [p for p, _ in report.skipped] == [str(tree[name])]


def test_a_fifo_swapped_in_after_the_walk_does_not_hang(tmp_path: Path) -> None:
    """The reader ingest uses opens non-blocking and checks the open descriptor, not the
    earlier stat (ingest reports the NotRegular it raises under the file's path)."""
    from qdrant_sift.client._sources import NotRegular, read_bytes

    victim = tmp_path / "victim.txt"
    os.mkfifo(victim)

    def read() -> str:
        with pytest.raises(NotRegular) as info:
            read_bytes(victim)
        return str(info.value)

    assert _run_with_deadline([victim], read) == "not a regular file (FIFO)"


def test_unreadable_file_and_folder_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "corpus"
    (root / "locked").mkdir(parents=True)
    (root / "locked" / "inner.txt").write_text("never seen")
    (root / "secret.txt").write_text("no access")
    (root / "ok.txt").write_text("plain words here")
    real_open, real_scandir = os.open, os.scandir

    # Root ignores permission bits, so deny access the way the kernel would answer it.
    def deny_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def deny_scandir(path: Any = ".") -> Any:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "open", deny_open)
    monkeypatch.setattr(os, "scandir", deny_scandir)
    with QdrantStore("c", location=":memory:") as store:
        report = ingest(root, store, HashEmbedder(), progress=False, **KW)
    reasons = dict(report.skipped)
    assert report.files_read == 1
    assert reasons[str((root / "secret.txt").resolve())] == "unreadable (Permission denied)"
    assert reasons[str(root / "locked")] == "unreadable folder (Permission denied)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_by_mode(tmp_path: Path) -> None:
    f = tmp_path / "secret.txt"
    f.write_text("no access")
    f.chmod(0)
    with QdrantStore("c", location=":memory:") as store:
        report = ingest(f, store, HashEmbedder(), progress=False, **KW)
    assert report.files_read == 0 and report.skipped[0][1].startswith("unreadable")
