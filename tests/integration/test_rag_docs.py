"""Every Python example in docs/integrations.md runs as written (real MiniLM, real frameworks).

Each block runs in its own subprocess, so one example's imports cannot help another's, and its
printed picks are checked for SIFT's behaviour: the first two picks never hold both
near-duplicate Qdrant sentences.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
NEEDS = {
    "langchain_classic": "langchain-classic",
    "langchain_qdrant": "langchain-qdrant",
    "llama_index": "llama-index-core",
    "haystack_integrations": "qdrant-haystack",
    "haystack": "haystack-ai",
}
DUPES = (
    "Qdrant stores vectors and payloads in collections.",
    "Qdrant stores vectors together with their payloads in collections.",
)


def test_the_doc_has_an_example_per_adapter() -> None:
    text = "\n".join(BLOCKS)
    for name in ("SiftRetriever", "SiftCompressor", "SiftNodePostprocessor", "SiftRanker"):
        assert name in text
    assert "import rerank" in text


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_example_runs(code: str, tmp_path: Path, unavailable: Any) -> None:
    for module, dist in NEEDS.items():  # a skip only without the framework outside CI
        if f"from {module}" in code and importlib.util.find_spec(module) is None:
            unavailable(f"the example's framework {dist}", module, "not importable")
    env = {
        **os.environ,
        "HAYSTACK_TELEMETRY_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, "the example printed nothing"
    # Nearest neighbours would lead with both near-duplicates; SIFT's first two picks never do.
    assert sum(any(d in line for line in lines[:2]) for d in DUPES) <= 1, done.stdout
