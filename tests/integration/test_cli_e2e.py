"""The console commands on real parts: ingest → search → generate; the demo on a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdrant_sift.client.cli import main

pytestmark = pytest.mark.slow

FACTS = {
    "quendor.txt": "Zorblat is the capital city of the island nation of Quendor. "
    "Its parliament meets there every spring.",
    "food.md": "The national dish of Quendor is smoked eel with barley.",
    "other.rst": "A haiku has three lines of five, seven and five syllables.",
}


def test_ingest_search_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in FACTS.items():
        (docs / name).write_text(text)
    (docs / "broken.txt").write_bytes(b"\xff\xfe\x00 not utf-8 \xc3")
    store = ["--path", str(tmp_path / "edge"), "--collection", "facts"]

    assert main(["ingest", str(docs), *store, "--chunk-tokens", "64", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "facts" in out and "3 points" in out and "broken.txt" in out
    assert main(["ingest", str(docs), *store, "--chunk-tokens", "64", "--no-progress"]) == 0
    assert "3 points" in capsys.readouterr().out  # idempotent

    assert main(["search", "capital of Quendor?", *store, "--n", "2", "--k", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and "Zorblat" in rows[0]["text"]
    assert rows[0]["uncertainty"] > rows[1]["uncertainty"] >= 0

    code = main(
        [
            "generate",
            "What is the capital of Quendor?",
            *store,
            "--n",
            "2",
            "--k",
            "3",
            "--max-new-tokens",
            "8",
            "--compare-base",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Base model answer" in out and "Adapted model answer" in out and "2 LoRA steps" in out

    assert (
        main(["search", "anything", "--path", str(tmp_path / "edge"), "--collection", "none"]) == 1
    )
    assert "add texts first" in capsys.readouterr().err


def test_demo_on_two_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "demo",
        "--path",
        str(tmp_path / "edge"),
        "--modules",
        "bisect,colorsys",
        "--n",
        "2",
        "--k",
        "20",
        "--chunk-tokens",
        "128",
        "--max-new-tokens",
        "8",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 standard-library modules" in out and "2 LoRA steps" in out
    assert "Base model answer" in out and "Adapted model answer" in out and "tune" in out
    assert main(args) == 0
    assert "(0 new)" in capsys.readouterr().out  # the second run reuses the collection
